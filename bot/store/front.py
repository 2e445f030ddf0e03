"""The store's front: one `Storage` per process over one engine, made of its parts.

Every function that reads records takes the viewer, and the visibility rule of SPEC section 2
(bot.store.visibility) is part of the SQL: a record is returned only when the query itself proves
the viewer may see it. Nothing outside the store touches the tables.
"""

from __future__ import annotations

from bot.store.digests import DigestsMixin
from bot.store.exporting import ExportMixin
from bot.store.legacy import LegacyMixin
from bot.store.people import PeopleMixin
from bot.store.records import RecordsMixin
from bot.store.settings import SettingsMixin


class Storage(RecordsMixin, PeopleMixin, SettingsMixin, LegacyMixin, ExportMixin, DigestsMixin):
    """All database work. Build one per process with `Storage(make_engine(url))`."""
