"""Domain errors: each carries one sentence for the user saying what was wrong and what to do."""

from __future__ import annotations


class UserError(Exception):
    """Something the caller can fix; the message is shown to them as it is."""


class NotFound(UserError):
    """The thing does not exist, or the caller may not see it (the two are not told apart)."""


class Forbidden(UserError):
    """The caller may see it but may not do this."""


class Conflict(UserError):
    """The request is valid but the current state does not allow it."""
