"""The Acknowledge and Snooze buttons: a context signed with the bot's key, naming the host, path,
kind, level and episode of the alert and when the post was made, so a captured click cannot be
replayed against a later alert."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from bot.alerts.store import Outgoing
from bot.i18n import _


def sign(secret: str, context: dict[str, Any]) -> str:
    payload = json.dumps({k: v for k, v in context.items() if k != "sig"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signature_ok(secret: str, context: dict[str, Any]) -> bool:
    given = context.get("sig")
    return isinstance(given, str) and given.isascii() and hmac.compare_digest(given, sign(secret, context))


def button_props(secret: str, host: str, action_url: str, item: Outgoing, now: datetime) -> dict[str, Any]:
    """The buttons of an alert post, labelled in the language in force (the service sets alerts.language)."""
    actions = []
    for action, name in (("ack", _("Acknowledge")), ("snooze", _("Snooze 1 h"))):
        context: dict[str, Any] = {"action": action, "host": host, "path": item.path, "kind": item.kind,
                                   "level": item.level, "episode": item.episode, "issued": int(now.timestamp())}
        context["sig"] = sign(secret, context)
        actions.append({"id": action, "name": name, "type": "button",
                        "integration": {"url": action_url, "context": context}})
    return {"attachments": [{"fallback": _("Acknowledge or snooze this alert"), "actions": actions}]}
