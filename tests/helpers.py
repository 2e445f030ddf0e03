"""What test files share: the one door under the store, for setting up states no command makes (a
role changed by another process, rows from before a limit existed) and for counting rows."""

from __future__ import annotations

from sqlalchemy import Engine

from bot.storage import Storage


def engine_of(storage: Storage) -> Engine:
    """The store's own engine: product code never reaches it from outside the store; tests may,
    through here only."""
    return storage._engine
