"""Interactive dialogs, as the server does them (server/channels/api4/integration_action.go openDialog and
submitDialog; app/integration_action.go OpenInteractiveDialog, SubmitInteractiveDialog, DoActionRequest;
model/integration_action.go GenerateTriggerId, DecodeAndVerifyTriggerId, Dialog.IsValid), and the part
the webapp plays when a user fills one in (``submit_dialog``).

A trigger id is made per command execution: base64("clientId:userId:millis:" + signature). The server
signs with its ECDSA key; the fake signs with an HMAC key of its own, so a trigger id edited to name
another user, or made up, fails verification exactly where the server's does. It expires after
ServiceSettings.OutgoingIntegrationRequestsTimeout (``trigger_timeout``, 30 s; 3 minutes in servers
before 9.x, which used InteractiveDialogTriggerTimeout).

Deviations: an invalid dialog is opened anyway with a warning, like the server, and the warning is kept
in ``dialog_problems`` for tests to read; the webapp's rendering is reduced to its required-field check.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import os
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.mattermost.gojson import (
    JSON,
    AppError,
    UserRef,
    _broadcast,
    _dumps,
    _id_of,
    _json_response,
    _permission_error,
    new_id,
)

# model/integration_action.go
TITLE_MAX, DISPLAY_NAME_MAX, NAME_MAX, HELP_TEXT_MAX = 24, 24, 300, 150
TEXT_MAX, TEXTAREA_MAX = 150, 3000
TEXT_SUBTYPES = ("", "text", "email", "number", "tel", "url", "password")
SUBMIT_RESPONSE_TYPES = ("", "ok", "form", "navigate")


def _trigger_error(what: str, message: str) -> AppError:
    err = AppError(400, f"interactive_message.decode_trigger_id.{what}")
    err.message = message
    return err


def dialog_problems(dialog: Any) -> list[str]:
    """model.Dialog.IsValid: lengths are Go's len(), in bytes."""
    if not isinstance(dialog, dict):
        return ["the dialog is not an object"]
    problems: list[str] = []
    title = str(dialog.get("title") or "")
    if not title or len(title.encode()) > TITLE_MAX:
        problems.append(f"invalid dialog title {title!r}")
    seen: set[str] = set()
    for element in dialog.get("elements") or []:
        name = str(element.get("name") or "")
        if name in seen:
            problems.append(f"duplicate dialog element {name!r}")
        seen.add(name)
        problems += [f"{name!r}: {p}" for p in _element_problems(element)]
    return problems


def _element_problems(e: JSON) -> list[str]:
    def too_long(field: str, limit: int, required: bool = False) -> list[str]:
        value = str(e.get(field) or "").encode()
        if required and not value:
            return [f"{field} cannot be empty"]
        return [f"{field} cannot be longer than {limit} bytes, got {len(value)}"] if len(value) > limit else []

    problems: list[str] = []
    if int(e.get("min_length") or 0) < 0 or int(e.get("min_length") or 0) > int(e.get("max_length") or 0):
        problems.append("min length should be between 0 and max length")
    problems += too_long("display_name", DISPLAY_NAME_MAX, True) + too_long("name", NAME_MAX, True)
    problems += too_long("help_text", HELP_TEXT_MAX)
    kind = e.get("type")
    if kind in ("text", "textarea"):
        limit = TEXT_MAX if kind == "text" else TEXTAREA_MAX
        problems += too_long("default", limit) + too_long("placeholder", limit)
        if (e.get("subtype") or "") not in TEXT_SUBTYPES:
            problems.append(f"invalid subtype {e.get('subtype')!r}")
    elif kind not in ("select", "bool", "radio", "date", "datetime"):
        problems.append(f"invalid element type: {kind!r}")
    return problems


class DialogsMixin:
    """Handlers and helpers of FakeMattermost for interactive dialogs; its state lives on the server."""

    def _init_dialogs(self) -> None:
        self.trigger_timeout = 30.0  # seconds: ServiceSettings.OutgoingIntegrationRequestsTimeout
        self.open_dialogs: dict[str, JSON] = {}  # user id -> the OpenDialogRequest shown to them
        self.dialog_problems: list[str] = []  # what Dialog.IsValid warned about, dialog by dialog
        self.dialog_submissions: list[JSON] = []  # every SubmitDialogRequest sent to an integration
        self._trigger_key = os.urandom(32)

    def _trigger_signature(self, data: str) -> str:
        """What GenerateTriggerId appends to "clientId:userId:millis:" (base64 of a signature)."""
        return base64.b64encode(hmac.new(self._trigger_key, data.encode(), hashlib.sha256).digest()).decode()

    def _verify_trigger_id(self, trigger_id: str) -> tuple[str, str]:
        """model.DecodeAndVerifyTriggerId: (client trigger id, user id), checks in the server's order."""
        try:
            decoded = base64.b64decode(trigger_id, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise _trigger_error("base64_decode_failed",
                                 "Failed to decode base64 for trigger ID for interactive dialog.") from None
        parts = decoded.split(":")
        if len(parts) != 4:
            raise _trigger_error("missing_data", "Trigger ID missing required data for interactive dialog.")
        client_id, user_id, millis, signature = parts
        stamp = int(millis) if millis.isdigit() else 0
        if self._now_ms() - stamp > self.trigger_timeout * 1000:
            raise _trigger_error("expired", f"Trigger ID for interactive dialog is expired. "
                                            f"Maximum time allowed is {self.trigger_timeout:g}s.")
        expected = self._trigger_signature(f"{client_id}:{user_id}:{millis}:")
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise _trigger_error("verify_signature_failed",
                                 "Signature verification failed for trigger ID for interactive dialog.")
        return client_id, user_id

    # ------------------------------------------------------------------ open (api4 openDialog)

    async def _open_dialog(self, request: web.Request) -> web.Response:
        # api.APIHandler: no session is required, the trigger id is the credential
        body = await self._json_body(request, "dialog")
        if not isinstance(body, dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="dialog")
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise AppError(400, "api.context.invalid_param.app_error", name="url")
        trigger_id = body.get("trigger_id")
        client_id, user_id = self._verify_trigger_id(trigger_id if isinstance(trigger_id, str) else "")
        opened = {**copy.deepcopy(body), "trigger_id": client_id}
        self.dialog_problems += [f"{user_id}: {p}" for p in dialog_problems(body.get("dialog"))]
        self.open_dialogs[user_id] = opened
        data = {"dialog": _dumps(opened)}
        for conn in list(self._conns):
            if conn.user_id == user_id:
                await self._send_event(conn, "open_dialog", data, _broadcast(user_id=user_id))
        return _json_response({"status": "OK"})

    # ------------------------------------------------------------------ submit (api4 submitDialog)

    async def _submit_dialog_handler(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        body = await self._json_body(request, "dialog")
        if not isinstance(body, dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="dialog")
        return _json_response(await self._submit_dialog(me, body))

    async def _submit_dialog(self, user_id: str, body: JSON) -> JSON:
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise AppError(400, "api.context.invalid_param.app_error", name="url")
        channel = self.channels.get(str(body.get("channel_id") or ""))
        if channel is None or not self._can_read_channel(channel, user_id):
            raise _permission_error("read_channel", user_id)
        if not self._has_team_access(str(body.get("team_id") or ""), user_id):
            raise _permission_error("view_team", user_id)
        request = {"type": "dialog_submission", "callback_id": str(body.get("callback_id") or ""),
                   "state": str(body.get("state") or ""), "user_id": user_id, "channel_id": channel["id"],
                   "team_id": str(body.get("team_id") or ""), "submission": body.get("submission") or {},
                   "cancelled": bool(body.get("cancelled"))}
        self.dialog_submissions.append(copy.deepcopy(request))
        assert self._http is not None, "start() the fake first"
        try:
            async with self._http.post(url, data=_dumps(request).encode(), headers={
                    "Content-Type": "application/json", "Accept": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=self.command_timeout)) as resp:
                raw, status = await resp.read(), resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AppError(400, "api.post.do_action.action_integration.app_error", detailed=f"err={exc}") from exc
        if status != 200:  # DoActionRequest
            raise AppError(400, "api.post.do_action.action_integration.app_error", detailed=f"status={status}")
        if not raw:
            return {}  # an empty answer is accepted: the dialog closes
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise AppError(500, "app.submit_interactive_dialog.decode_json_error") from exc
        if not isinstance(answer, dict):
            raise AppError(500, "app.submit_interactive_dialog.decode_json_error")
        if not answer.get("error") and not answer.get("errors") and answer.get("type", "") not in SUBMIT_RESPONSE_TYPES:
            raise AppError(400, "app.submit_interactive_dialog.invalid_response")
        # SubmitDialogResponse's fields are omitempty; anything else is dropped by Go's decoder
        return {k: answer[k] for k in ("error", "errors", "type", "form") if answer.get(k)}

    async def submit_dialog(self, user: UserRef, values: dict[str, Any], *, cancelled: bool = False,
                            state: str | None = None) -> JSON | None:
        """``user`` fills in the dialog open for them and presses Submit (or Cancel), as the webapp does:
        required fields are checked in the browser first; a cancel is sent only with notify_on_cancel.
        Returns what the dialog shows: ``{}`` (it closes), ``{"errors": ...}``/``{"error": ...}``, or
        the AppError JSON; None when nothing was sent. ``state`` replaces the dialog's (a forged one)."""
        uid = _id_of(user)
        opened = self.open_dialogs.get(uid)
        if opened is None:
            raise AssertionError(f"no dialog is open for {uid}")
        dialog = opened["dialog"]
        if cancelled and not dialog.get("notify_on_cancel"):
            self.open_dialogs.pop(uid, None)
            return None
        submission = {e["name"]: e.get("default") or None for e in dialog.get("elements") or []}
        submission.update(values)
        if not cancelled:
            missing = {e["name"]: "This field is required." for e in dialog.get("elements") or []
                       if not e.get("optional") and not submission.get(e["name"])}
            if missing:
                return {"errors": missing}
        where = next((r for r in reversed(self.slash_requests) if ("user_id", uid) in r["form"]), None)
        form = dict(where["form"]) if where else {}
        body = {"url": opened["url"], "callback_id": dialog.get("callback_id", ""),
                "state": dialog.get("state", "") if state is None else state,
                "channel_id": form.get("channel_id", ""), "team_id": form.get("team_id", ""),
                "submission": submission, "cancelled": cancelled}
        try:
            answer = await self._submit_dialog(uid, body)
        except AppError as err:
            return err.to_json(new_id())
        if cancelled or not (answer.get("error") or answer.get("errors")):
            self.open_dialogs.pop(uid, None)
        return answer
