"""The house rules, checked: file and function sizes in bot/, an import graph without cycles, commands
that never reach under the store, and a README (and config.yaml) that name every module, config key
and command, so the documents cannot drift from the code."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import yaml

from bot.commands import dispatcher
from bot.config import Config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def bot_modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "bot").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _runtime_imports(tree: ast.Module, modules: dict[str, Path]) -> set[str]:
    """bot.* modules imported when the module runs (imports under `if TYPE_CHECKING:` do not run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bot"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    modules = bot_modules()
    return {name: _runtime_imports(ast.parse(path.read_text(encoding="utf-8")), modules) - {name}
            for name, path in modules.items()}


def test_no_file_in_bot_is_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in bot_modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


def test_no_function_in_bot_is_over_60_lines() -> None:
    long = []
    for path in bot_modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and node.end_lineno and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert long == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(dep):], dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_commands_never_reach_under_the_store() -> None:
    for name, path in bot_modules().items():
        if not name.startswith("bot.commands"):
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) (sqlalchemy|bot\.tables|bot\.store)\b", text, re.M), name


def test_the_readme_names_every_module() -> None:
    missing = [str(p.relative_to(ROOT)) for name, p in bot_modules().items()
               if p.name != "__init__.py" and f"`{p.relative_to(ROOT)}`" not in README
               and f"`{p.relative_to(ROOT).parent}/{p.stem}`" not in README]
    assert missing == [], "add these to the README's module table"


def config_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += config_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def test_every_config_key_is_in_config_yaml_and_the_readme() -> None:
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    for key in config_keys():
        node = shipped
        for part in key.split("."):
            assert part in node, f"{key} is missing from config.yaml"
            node = node[part]
        section, _, leaf = key.rpartition(".")
        named = f"`{key}`" in README or (section and re.search(rf"`{re.escape(section)}\.[^`]*\b{leaf}\b", README))
        assert named, f"{key} is missing from the README's configuration table"


def test_every_command_is_in_the_readme() -> None:
    missing = [name for name, cmd in dispatcher().table.items() if cmd.listed and f"/rec {name}" not in README]
    assert missing == [], "add these to the README's command list"


def test_the_chinese_readme_keeps_step_with_the_english_one() -> None:
    # The same commands and configuration keys, so a reader of either finds the same product.
    zh = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
    missing_commands = [name for name, cmd in dispatcher().table.items() if cmd.listed and f"/rec {name}" not in zh]
    missing_keys = [key for key in config_keys() if f"`{key}`" not in zh]
    assert missing_commands == [] and missing_keys == []
