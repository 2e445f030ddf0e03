"""The entry to the store (bot/store/): the Storage front and what it hands out."""

from bot.store.db import IDENTITY_MAX_AGE, make_engine
from bot.store.front import Storage
from bot.store.models import (
    MAX_BODY,
    MAX_TAG,
    MAX_TAGS,
    ROLES,
    Attachment,
    AuditEntry,
    Filter,
    MaybeSaved,
    Page,
    Record,
    Revision,
    User,
    extract_tags,
    utcnow,
)

__all__ = ["IDENTITY_MAX_AGE", "MAX_BODY", "MAX_TAG", "MAX_TAGS", "ROLES", "Attachment", "AuditEntry", "Filter",
           "MaybeSaved", "Page", "Record", "Revision", "Storage", "User", "extract_tags", "make_engine", "utcnow"]
