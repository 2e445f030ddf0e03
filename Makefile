# The README's two commands: `make run` (install, then start the bot on SQLite) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test install install-test lint bench clean messages

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(PY) -m bot migrate
	$(PY) -m bot serve

test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

# After changing user-facing text: extract every _()/N_()/ngettext() message into the template and merge
# it into each language's catalog; then translate the new or fuzzy entries (tests/test_language.py
# names any that are missing).
messages: install
	$(VENV)/bin/pybabel extract -F babel.cfg --add-location=file --sort-by-file \
		--project=recbot --msgid-bugs-address="" -o bot/locales/messages.pot .
	$(VENV)/bin/pybabel update -i bot/locales/messages.pot -d bot/locales -D messages --ignore-pot-creation-date --ignore-obsolete

bench: install-test
	$(PY) -m bench.storage_bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
