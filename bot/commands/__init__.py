"""Every command group; `dispatcher()` builds the one table that routes and generates help."""

from __future__ import annotations

from bot.commands import admin, alerts, capture, digest, direct, export, help, records, share
from bot.dispatch import Dispatcher


def dispatcher() -> Dispatcher:
    return Dispatcher([records.router, share.router, export.router, help.router, admin.router, direct.router,
                       alerts.router, capture.router, digest.router])
