"""The `/rec add` dialog over Mattermost's interactive dialogs: the signed state, opening the dialog
(`POST /api/v4/actions/dialogs/open` with the slash request's trigger id), and the door its
submission comes back through (`POST /mattermost/dialog`), which confirms a save in the channel.

Anyone can make Mattermost post a submission to our URL (`/actions/dialogs/submit` takes any url), so
the state is the only thing that says recbot opened this dialog for this user: it is signed with a key
kept in the database (like the alert buttons'), names the user and channel, and expires.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from mattermostautodriver.exceptions import MattermostError

from bot import i18n
from bot.alerts.buttons import sign, signature_ok
from bot.context import Services
from bot.dispatch import DIALOG, Dispatcher, Event, Outcome
from bot.i18n import N_, _
from bot.mattermost.slash import SlashRequest
from bot.metrics import REFUSED_COMMAND, Metrics
from bot.render import cap
from bot.storage import MAX_BODY, Storage

log = logging.getLogger(__name__)

SECRET_SETTING = "mattermost.dialog_secret"  # noqa: S105 (the settings key; the secret is generated)
STATE_MAX_AGE = timedelta(hours=1)  # long enough to write a long record, short enough to limit a replay
MAX_STATE = 1024  # characters of a state we are willing to parse
CALLBACK_ADD = "rec-add"
DIALOG_PATH = "/mattermost/dialog"
TAGS_MAX_LENGTH = 1000  # characters in the tags field (the webapp's default for a text field is 150)


class StateRefused(Exception):
    """A submission whose state recbot did not sign for this user, or signed too long ago."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "forged" or "expired"


def state_secret(storage: Storage) -> str:
    """The HMAC key of dialog states: made once, kept in the database for every process."""
    stored = storage.settings(max_age=60.0).get(SECRET_SETTING)
    if not stored:
        try:
            storage.store_internal(SECRET_SETTING, secrets.token_hex(32))
        except Exception:  # another process inserted it first: theirs is the one
            log.info("the dialog secret was made by another process")
        stored = storage.settings().get(SECRET_SETTING, "")
    return stored


def make_state(secret: str, user_id: str, channel_id: str, issued: datetime) -> str:
    context: dict[str, Any] = {"purpose": CALLBACK_ADD, "user": user_id, "channel": channel_id,
                               "issued": int(issued.timestamp())}
    context["sig"] = sign(secret, context)
    return json.dumps(context, separators=(",", ":"))


def check_state(secret: str, state: Any, user_id: str, now: datetime) -> str:
    """The channel the dialog was opened in, once the state is shown to be ours, this user's and fresh."""
    if not isinstance(state, str) or len(state) > MAX_STATE:
        raise StateRefused("forged")
    try:
        context = json.loads(state)
    except ValueError:
        raise StateRefused("forged") from None
    if not isinstance(context, dict) or set(context) != {"purpose", "user", "channel", "issued", "sig"}:
        raise StateRefused("forged")
    if not signature_ok(secret, context) or context["purpose"] != CALLBACK_ADD:
        raise StateRefused("forged")
    signed_user, channel, issued = context["user"], context["channel"], context["issued"]
    if not (isinstance(signed_user, str) and isinstance(channel, str) and isinstance(issued, int)):
        raise StateRefused("forged")
    # Mattermost sets user_id from the submitter's session: a state opened for someone else is not theirs.
    if not hmac.compare_digest(signed_user.encode(), user_id.encode()):
        raise StateRefused("forged")
    age = now.timestamp() - issued
    if age > STATE_MAX_AGE.total_seconds() or age < -300:
        raise StateRefused("expired")
    return channel


def add_dialog(state: str) -> dict[str, Any]:
    """The dialog, labelled in the language in force. Lengths are model.DialogElement's limits, which
    Go counts in bytes: a title and labels of at most 24 bytes, help of at most 150."""
    return {
        "callback_id": CALLBACK_ADD,
        "title": _("New record"),
        "introduction_text": _("Write what you did: commands, output, notes. #words in the text are tags too."),
        "elements": [
            {"display_name": _("What you did"), "name": "text", "type": "textarea", "subtype": "", "default": "",
             "placeholder": _("restarted nginx on web-01 after the config change"),
             "help_text": _("Long text is fine; it is kept as written."), "optional": False,
             "min_length": 0, "max_length": MAX_BODY},
            {"display_name": _("Tags"), "name": "tags", "type": "text", "subtype": "", "default": "",
             "placeholder": "#deploy #web-01", "help_text": _("Optional, separated by spaces."),
             "optional": True, "min_length": 0, "max_length": TAGS_MAX_LENGTH},
        ],
        "submit_label": _("Save"),
        "notify_on_cancel": False,
        "state": state,
    }


def open_add_dialog(services: Services, request: SlashRequest) -> None:
    """Open the dialog for the user who typed the command (blocking: called from a handler's thread)."""
    gateway = services.gateway
    assert gateway is not None
    url = services.config.server.public_url.rstrip("/") + DIALOG_PATH
    state = make_state(state_secret(services.storage), request.user_id, request.channel_id,
                       services.storage.clock())
    # The gateway's blocking bridge (its loop, timeout and error sentence) is the one way to Mattermost.
    gateway._call(gateway.driver.integration_actions.open_interactive_dialog(
        request.trigger_id, url, add_dialog(state)), _("opening the dialog"))


def dialog_possible(services: Services, request: SlashRequest) -> bool:
    return bool(services.gateway is not None and services.config.server.public_url and request.trigger_id)


class DialogDoor:
    """`POST /mattermost/dialog`: a SubmitDialogRequest. The state is checked before anything else; a
    submission then goes the dispatcher's way as a DIALOG event, and the answer is what Mattermost's
    dialog shows: `{"errors": {field: ...}}`, a general `{"error": ...}`, or an empty 200 (closed)."""

    def __init__(self, services: Services, dispatcher: Dispatcher, pool: Executor, metrics: Metrics) -> None:
        self.services = services
        self.dispatcher = dispatcher
        self.pool = pool
        self.metrics = metrics

    async def submitted(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await _json_object(request)
        user_id = body.get("user_id") if body is not None else None
        if body is None or not isinstance(user_id, str) or not user_id:
            self.metrics.observe(REFUSED_COMMAND, Outcome.REFUSED, time.perf_counter() - started)
            return web.json_response({"error": "the request is not a Mattermost dialog submission"}, status=400)
        if body.get("cancelled") is True:
            return web.Response(status=200)  # nothing was asked for, so nothing is done
        loop = asyncio.get_running_loop()
        channel_id, refusal = await loop.run_in_executor(self.pool, self._check, body.get("state"), user_id)
        if refusal:
            self.metrics.observe(REFUSED_COMMAND, Outcome.REFUSED, time.perf_counter() - started)
            return web.json_response({"error": refusal})
        given = body.get("submission")
        submission: dict[str, Any] = given if isinstance(given, dict) else {}
        text, tags = submission.get("text"), submission.get("tags")
        event = Event(SlashRequest(user_id=user_id, user_name="", text=text if isinstance(text, str) else "",
                                   channel_id=channel_id),
                      source=DIALOG, context={"tags": tags if isinstance(tags, str) else ""})
        result = await loop.run_in_executor(self.pool, self.dispatcher.handle, self.services, event)
        self.metrics.observe(result.command, result.outcome, time.perf_counter() - started)
        errors = (result.reply.props or {}).get("errors")
        if errors:
            return web.json_response({"errors": errors})
        if result.outcome != Outcome.OK:
            return web.json_response({"error": result.reply.text})
        await self._confirm(user_id, channel_id, result.reply.text)
        return web.Response(status=200)

    def _check(self, state: Any, user_id: str) -> tuple[str, str]:
        """(channel id, "") for a good state; ("", why not) in the submitter's language otherwise."""
        storage, config = self.services.storage, self.services.config
        try:
            return check_state(state_secret(storage), state, user_id, storage.clock()), ""
        except StateRefused as exc:
            log.warning("dialog submission refused (%s state) for user %s", exc.reason, user_id)
            known = storage.user_by_mm_id(user_id)
            with i18n.speaking(i18n.language_of(known.locale if known else None, config.language)):
                message = EXPIRED if exc.reason == "expired" else FORGED
                return "", _(message, trigger=config.mattermost.trigger)

    async def _confirm(self, user_id: str, channel_id: str, message: str) -> None:
        """Ephemeral in the dialog's channel; Mattermost lets only system admins post those, so a bot
        account without that role confirms by direct message instead."""
        gateway = self.services.gateway
        if gateway is None:
            return
        try:
            await gateway.driver.posts.create_post_ephemeral(
                user_id, {"channel_id": channel_id, "message": cap(message)})
            return
        except MattermostError as exc:
            log.info("ephemeral confirmation refused (%s); sending it as a direct message", exc.status_code)
        except Exception as exc:
            log.warning("ephemeral confirmation failed (%s); sending it as a direct message", exc)
        try:
            await gateway.post_direct(user_id, message)
        except Exception as exc:
            log.warning("the dialog's confirmation could not be sent to %s: %s", user_id, exc)


FORGED = N_("This form was not opened by recbot for you, so nothing was saved. "
            "Type `/{trigger} add` to open a new one.")
EXPIRED = N_("This form was opened more than an hour ago, so nothing was saved. Copy your text, "
             "type `/{trigger} add` and paste it into the new form.")


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None
