"""Slash commands: the /commands endpoints (api4/command.go) and executing them (app/command.go),
with response_url hooks."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse

import aiohttp
import yarl
from aiohttp import web

from tests.fakes.mattermost.gojson import (
    _AT_MENTION,
    _CHANNEL_MENTION,
    _COMMAND_DEFAULTS,
    _COMMAND_FIELDS,
    _RESTRICTED_USERNAMES,
    _SLACK_LINK,
    _SLACK_USER_ID,
    _USERNAME_SPECIAL_CHARS,
    _VALID_USERNAME_ALLOW_REMOTE,
    BUILTIN_TRIGGERS,
    COMMAND_WEBHOOK_LIFETIME_MS,
    COMMAND_WEBHOOK_USES,
    JSON,
    MAX_TRIGGER_LEN,
    AppError,
    _first_space,
    _go_decode,
    _json_response,
    _permission_error,
    decode_command_response,
    is_valid_id,
    new_id,
    plain_text_command_response,
)


class CommandsMixin:
    """Handlers and helpers of FakeMattermost for slash commands."""

    # ------------------------------------------------------------------ commands (api4/command.go)

    def _live_command(self, command_id: str) -> JSON | None:
        command = self.commands.get(command_id)
        return command if command is not None and not command["delete_at"] else None

    def _team_commands(self, team_id: str) -> list[JSON]:
        return [c for c in self.commands.values() if c["team_id"] == team_id and not c["delete_at"]]

    def _check_trigger_unique(self, team_id: str, trigger: str, exclude_id: str = "") -> None:
        trigger = trigger.lower()
        taken = trigger in BUILTIN_TRIGGERS or any(
            c["id"] != exclude_id and c["trigger"].lower() == trigger for c in self._team_commands(team_id))
        if taken:
            raise AppError(400, "api.command.duplicate_trigger.app_error")

    @staticmethod
    def _validate_command(cmd: JSON) -> None:
        """model.Command.IsValid."""
        def invalid(what: str) -> AppError:
            return AppError(400, f"model.command.is_valid.{what}.app_error")

        if not is_valid_id(cmd["id"]):
            raise invalid("id")
        if len(cmd["token"]) != 26:
            raise invalid("token")
        if not is_valid_id(cmd["creator_id"]):
            raise invalid("user_id")
        if not is_valid_id(cmd["team_id"]):
            raise invalid("team_id")
        trigger = cmd["trigger"]
        if not 1 <= len(trigger) <= 128 or trigger.startswith("/") or " " in trigger:
            raise invalid("trigger")
        if not cmd["url"] or len(cmd["url"]) > 1024:
            raise invalid("url")
        if not cmd["url"].startswith(("http://", "https://")):
            raise invalid("url_http")
        if cmd["method"] not in ("G", "P"):
            raise invalid("method")
        if len(cmd["display_name"]) > 64:
            raise invalid("display_name")
        if len(cmd["description"]) > 128:
            raise invalid("description")

    async def _decode_command(self, request: web.Request) -> JSON:
        body = await self._json_body(request, "command")
        try:
            return _go_decode(body, _COMMAND_FIELDS, _COMMAND_DEFAULTS, "model.Command")
        except ValueError as exc:
            raise AppError(400, "api.context.invalid_body_param.app_error", detailed=str(exc),
                           name="command") from exc

    @staticmethod
    def _command_json(cmd: JSON) -> JSON:
        return {k: v for k, v in cmd.items() if not (k == "autocomplete_data" and v is None)
                and not (k == "autocomplete_icon_data" and not v)}

    @staticmethod
    def _sanitized(cmd: JSON) -> JSON:
        # model.Command.Sanitize: what non-managers and the full listing see
        return {**cmd, "token": "", "creator_id": "", "method": "", "url": "", "username": "", "icon_url": ""}

    async def _create_command(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        cmd = await self._decode_command(request)
        if not self._can_manage_commands_in(cmd["team_id"], me):
            raise _permission_error("manage_slash_commands", me)
        cmd["creator_id"] = me
        cmd["trigger"] = cmd["trigger"].lower()
        self._check_trigger_unique(cmd["team_id"], cmd["trigger"])
        if cmd["id"]:
            # SqlCommandStore.Save refuses a command that already has an id
            raise AppError(500, "app.command.createcommand.internal_error", detailed="id must be empty")
        cmd["id"] = new_id()
        cmd["token"] = cmd["token"] or new_id()  # Command.PreSave keeps a token given by the client
        cmd["create_at"] = cmd["update_at"] = self._now_ms()
        cmd["delete_at"] = 0
        self._validate_command(cmd)
        self.commands[cmd["id"]] = cmd
        return _json_response(self._command_json(cmd), 201)

    async def _list_commands(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        team_id = request.query.get("team_id", "")
        if not team_id:
            raise AppError(400, "api.context.invalid_body_param.app_error", name="team_id")
        if not self._has_team_access(team_id, me):
            raise _permission_error("view_team", me)
        custom_only = request.query.get("custom_only", "").lower() in ("1", "t", "true")
        can_manage = self._can_manage_commands_in(team_id, me)
        commands = self._team_commands(team_id)
        if custom_only:
            if not can_manage:
                raise _permission_error("manage_slash_commands", me)
            listing = commands  # ListTeamCommands: full commands, tokens included
        elif can_manage:
            listing = [self._sanitized(c) for c in commands]  # ListAllCommands (built-ins not faked)
        else:
            listing = [self._sanitized(c) for c in commands if c["auto_complete"]]  # ListAutocompleteCommands
        return _json_response([self._command_json(c) for c in listing])

    def _managed_command(self, request: web.Request, me: str) -> JSON:
        """A live command the caller may manage; 404 otherwise, so ids do not leak (api4)."""
        cmd = self._live_command(request.match_info["command_id"])
        if cmd is None or not self._can_manage_commands_in(cmd["team_id"], me):
            raise AppError(404, "store.sql_command.save.get.app_error")
        return cmd

    def _require_owner_or_admin(self, cmd: JSON, me: str) -> None:
        if cmd["creator_id"] != me and not self._is_admin(me):
            raise _permission_error("manage_others_slash_commands", me)

    async def _get_command(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        return _json_response(self._command_json(self._managed_command(request, me)))

    async def _update_command(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        updated = await self._decode_command(request)
        if updated["id"] != request.match_info["command_id"]:
            raise AppError(400, "api.context.invalid_body_param.app_error", name="command")
        old = self._live_command(updated["id"])
        if old is None:
            raise AppError(404, "store.sql_command.save.get.app_error")
        if updated["team_id"] != old["team_id"]:
            raise AppError(400, "api.command.team_mismatch.app_error", detailed=f"user_id={me}")
        old = self._managed_command(request, me)
        self._require_owner_or_admin(old, me)
        # app.UpdateCommand keeps identity, token, times and owner; everything else is replaced
        for key in ("id", "token", "create_at", "delete_at", "creator_id", "plugin_id", "team_id"):
            updated[key] = old[key]
        updated["trigger"] = updated["trigger"].lower()
        updated["update_at"] = self._now_ms()
        self._check_trigger_unique(updated["team_id"], updated["trigger"], exclude_id=updated["id"])
        self._validate_command(updated)
        self.commands[updated["id"]] = updated
        return _json_response(self._command_json(updated))

    async def _delete_command(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        cmd = self._managed_command(request, me)
        self._require_owner_or_admin(cmd, me)
        cmd["delete_at"] = self._now_ms()
        return _json_response({"status": "OK"})

    async def _regen_token(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        cmd = self._managed_command(request, me)
        self._require_owner_or_admin(cmd, me)
        cmd["token"] = new_id()
        cmd["update_at"] = self._now_ms()
        return _json_response({"token": cmd["token"]})

    # ------------------------------------------------------------------ executing (app/command.go)

    async def _execute_handler(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        body = await self._json_body(request, "command_args")
        if not isinstance(body, dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="command_args")
        return _json_response(await self._execute_command(me, body))

    def _trigger_ids(self, user_id: str) -> tuple[str, str]:
        """model.GenerateTriggerId: (client trigger id, signed trigger id sent to the integration)."""
        client_id = new_id()
        data = f"{client_id}:{user_id}:{self._now_ms()}:"
        signature = self._trigger_signature(data)  # verified by /actions/dialogs/open
        return client_id, base64.b64encode((data + signature).encode()).decode()

    def _user_mentions(self, message: str, team_id: str) -> list[tuple[str, str]]:
        """app.MentionsToTeamMembers: (name, user id) of @mentions of team members."""
        found: list[tuple[str, str]] = []
        seen: set[str] = set()
        for match in _AT_MENTION.findall(message):
            name = match[1:].lower()
            if name in seen or not (1 <= len(name) <= 64 and _VALID_USERNAME_ALLOW_REMOTE.match(name)
                                    and name not in _RESTRICTED_USERNAMES):
                continue
            seen.add(name)
            candidate = name
            user = self.find_user(candidate)
            # trimUsernameSpecialChar: "@bob." mentions bob
            while user is None and candidate and candidate[-1] in _USERNAME_SPECIAL_CHARS:
                candidate = candidate[:-1]
                user = self.find_user(candidate)
            # the server collects them in a map keyed by name: "@bob" and "@bob." are one mention
            if user is not None and self._in_team(team_id, user["id"]) and candidate not in dict(found):
                found.append((candidate, user["id"]))
        return found

    def _channel_mentions(self, message: str, team_id: str) -> list[tuple[str, str]]:
        """app.MentionsToPublicChannels: (name, channel id) of ~mentions of public channels."""
        found: list[tuple[str, str]] = []
        for name in dict.fromkeys(m[1:] for m in _CHANNEL_MENTION.findall(message)):
            channel = self.find_channel(team_id, name)
            if channel is not None and channel["type"] == "O":
                found.append((name, channel["id"]))
        return found

    async def _execute_command(self, user_id: str, args: JSON) -> JSON:
        command, channel_id = args.get("command"), args.get("channel_id")
        if not isinstance(command, str) or len(command) <= 1 or not command.startswith("/") \
                or not is_valid_id(channel_id):
            raise AppError(400, "api.command.execute_command.start.app_error")
        assert isinstance(channel_id, str)
        if not self._has_channel_access(channel_id, user_id):
            raise _permission_error("use_slash_commands", user_id)
        channel = self.channels.get(channel_id)
        if channel is None:
            raise AppError(404, "app.channel.get.existing.app_error")
        team_id = str(args.get("team_id") or "")
        if channel["type"] in ("O", "P"):
            team_id = channel["team_id"]  # commands of another team cannot run here
        elif not self._has_team_access(team_id, user_id):
            raise _permission_error("use_slash_commands", user_id)
        root_id = str(args.get("root_id") or "")

        # ExecuteCommand
        space = _first_space(command)
        trigger, message = (command[:space], command[space + 1:]) if space != -1 else (command, "")
        trigger = trigger.lower()
        if not trigger.startswith("/"):
            raise AppError(400, "api.command.execute_command.format.app_error")
        trigger = trigger[1:]
        client_trigger_id, trigger_id = self._trigger_ids(user_id)

        # tryExecuteCustomCommand
        team = self.teams.get(team_id)
        if team is None:
            raise AppError(404, "app.team.get.find.app_error")
        cmd = None
        for team_cmd in self._team_commands(team_id):
            if team_cmd["trigger"] == trigger:
                cmd = team_cmd
        if cmd is None:
            shown = trigger if len(trigger) <= MAX_TRIGGER_LEN else trigger[:MAX_TRIGGER_LEN] + "..."
            raise AppError(404, "api.command.execute_command.not_found.app_error", trigger=shown)
        values: dict[str, list[str]] = {
            "token": [cmd["token"]], "team_id": [cmd["team_id"]], "team_domain": [team["name"]],
            "channel_id": [channel_id], "channel_name": [channel["name"]], "user_id": [user_id],
            "user_name": [self.users[user_id]["username"]], "command": ["/" + trigger], "text": [message],
            "trigger_id": [trigger_id], "root_id": [root_id],
        }
        for key, mentions in (("user_mentions", self._user_mentions(message, team["id"])),
                              ("channel_mentions", self._channel_mentions(message, team["id"]))):
            if mentions:
                values[key] = [name for name, _ in mentions]
                values[key + "_ids"] = [ident for _, ident in mentions]
        hook = {"id": new_id(), "command_id": cmd["id"], "user_id": user_id, "channel_id": channel_id,
                "root_id": root_id, "create_at": self._now_ms(), "use_count": 0}
        self.hooks[hook["id"]] = hook
        values["response_url"] = [f"{self.base_url}/hooks/commands/{hook['id']}"]
        response = await self._do_command_request(cmd, values)
        response["trigger_id"] = client_trigger_id
        handle_args = {"user_id": user_id, "channel_id": channel_id, "team_id": team_id, "root_id": root_id,
                       "command": command}
        return await self._handle_command_response(handle_args, response)

    async def _do_command_request(self, cmd: JSON, values: dict[str, list[str]]) -> JSON:
        """app.DoCommandRequest: the outgoing request and the parsing of its answer."""
        assert self._http is not None, "start() the fake first"
        # url.Values.Encode: keys sorted, values of a key in order, spaces as '+'
        encoded = urllib.parse.urlencode([(k, v) for k in sorted(values) for v in values[k]])
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": "Mattermost-Bot/1.1"}
        if cmd["token"]:
            headers["Authorization"] = "Token " + cmd["token"]
        body: bytes | None = None
        if cmd["method"] == "G":
            parts = urllib.parse.urlsplit(cmd["url"])
            url = urllib.parse.urlunsplit(parts._replace(query=f"{parts.query}&{encoded}" if parts.query else encoded))
            method = "GET"
        else:
            url, method, body = cmd["url"], "POST", encoded.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.slash_requests.append({"method": method, "url": url, "headers": dict(headers),
                                    "form": [(k, v) for k in sorted(values) for v in values[k]]})
        try:
            async with self._http.request(method, yarl.URL(url, encoded=True), data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=self.command_timeout)) as resp:
                raw = await resp.read()
                status, reason = resp.status, resp.reason or ""
                content_type = resp.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AppError(500, "api.command.execute_command.failed.app_error", detailed=repr(exc),
                           trigger=cmd["trigger"]) from exc
        if status != 200:
            raise AppError(500, "api.command.execute_command.failed_resp.app_error",
                           detailed=raw.decode("utf-8", "replace"), trigger=cmd["trigger"],
                           response_status=f"{status} {reason}".strip())
        # model.CommandResponseFromHTTPBody: JSON only for exactly application/json (case matters)
        if content_type.split(";")[0].strip() == "application/json":
            try:
                return decode_command_response(json.loads(raw.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as exc:
                raise AppError(500, "api.command.execute_command.failed.app_error", detailed=str(exc),
                               trigger=cmd["trigger"]) from exc
        return plain_text_command_response(raw.decode("utf-8", "replace"))

    async def _handle_command_response(self, args: JSON, response: JSON) -> JSON:
        """app.HandleCommandResponse: the response, then each extra response; the last error wins."""
        trigger = args["command"].split(" ")[0][1:].lower() if args["command"] else ""
        last_error: AppError | None = None
        for each in [response, *(response["extra_responses"] or [])]:
            try:
                await self._handle_command_response_post(args, each)
            except AppError as err:
                last_error = err
        if last_error is not None:
            raise AppError(500, "api.command.execute_command.create_post_failed.app_error",
                           detailed=f"{last_error.error_id}: {last_error.message}", trigger=trigger)
        return response

    async def _handle_command_response_post(self, args: JSON, response: JSON) -> None:
        """app.HandleCommandResponsePost and CreateCommandPost for a custom command."""
        post: JSON = {"channel_id": args["channel_id"], "root_id": args["root_id"], "user_id": args["user_id"],
                      "type": response["type"], "props": dict(response["props"] or {})}
        if response["channel_id"]:
            # GetChannelMember(response.ChannelId, args.UserId): no admin bypass here
            if not self._in_channel(response["channel_id"], args["user_id"]):
                raise AppError(403, "api.command.command_post.forbidden.app_error")
            post["channel_id"] = response["channel_id"]
        # a custom command's answer is a bot post; username/icon overrides are off by default
        post["props"]["from_webhook"] = "true"
        if not response["skip_slack_parsing"]:
            response["text"] = self._process_slack_text(response["text"])
        message = response["text"] if response["skip_slack_parsing"] else _SLACK_LINK.sub(r"[\2](\1)",
                                                                                           response["text"])
        if post["type"].startswith("system_"):
            raise AppError(400, "api.context.invalid_param.app_error", name="post.type")
        attachments = response["attachments"]
        if attachments is not None:
            if attachments:
                post["props"]["attachments"] = attachments
                post["type"] = post["type"] or "slack_attachment"
            else:
                post["props"].pop("attachments", None)
        if response["response_type"] == "in_channel":
            await self._create_post(post["user_id"], post["channel_id"], message, root_id=post["root_id"],
                                    post_type=post["type"], props=post["props"])
        elif response["response_type"] in ("", "ephemeral") and (response["text"] or attachments is not None):
            await self._send_ephemeral(post["user_id"], self._new_post(
                post["user_id"], post["channel_id"], message, root_id=post["root_id"], post_type=post["type"],
                props=post["props"]))

    def _process_slack_text(self, text: str) -> str:
        """app.ProcessSlackText: <!channel>/<!here>/<!all> and <@userid> become @mentions."""
        for word in ("channel", "here", "all"):
            text = text.replace(f"<!{word}>", f"@{word}")

        def user(match: re.Match[str]) -> str:
            found = self.users.get(match.group(1))
            return "@" + found["username"] if found else match.group(0)

        return _SLACK_USER_ID.sub(user, text)

    async def _command_hook(self, request: web.Request) -> web.Response:
        """web.commandWebhook + app.HandleCommandWebhook: a response_url, without authentication."""
        raw = await request.read()
        if request.headers.get("Content-Type", "").split(";")[0].strip() == "application/json":
            try:
                response = decode_command_response(json.loads(raw.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as exc:
                raise AppError(400, "web.command_webhook.parse.app_error", detailed=str(exc)) from exc
        else:
            response = plain_text_command_response(raw.decode("utf-8", "replace"))
        hook = self.hooks.get(request.match_info["hook_id"])
        if hook is None or hook["create_at"] <= self._now_ms() - COMMAND_WEBHOOK_LIFETIME_MS:
            raise AppError(404, "app.command_webhook.get.missing")
        cmd = self._live_command(hook["command_id"])
        if cmd is None:
            raise AppError(400, "web.command_webhook.command.app_error")
        if hook["use_count"] >= COMMAND_WEBHOOK_USES:
            raise AppError(400, "app.command_webhook.try_use.invalid")
        hook["use_count"] += 1
        args = {"user_id": hook["user_id"], "channel_id": hook["channel_id"], "team_id": cmd["team_id"],
                "root_id": hook["root_id"], "command": ""}
        await self._handle_command_response(args, response)
        return web.Response(text="ok", content_type="text/plain")
