"""The REST API v4 the bot uses: users and teams, channels, posts (with pending_post_id), files."""

from __future__ import annotations

import copy
import json
import mimetypes
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.mattermost.gojson import (
    _AT_MENTION,
    _USERNAME_SPECIAL_CHARS,
    JSON,
    PENDING_POST_IDS_TTL,
    SERVER_VERSION,
    AppError,
    UserRef,
    _broadcast,
    _dumps,
    _id_of,
    _json_response,
    _permission_error,
    is_valid_id,
    new_id,
    parse_hashtags,
)


class RestMixin:
    """Handlers and helpers of FakeMattermost for the REST endpoints; its state lives on the server."""

    # ------------------------------------------------------------------ users and teams

    async def _ping(self, request: web.Request) -> web.Response:
        return _json_response({"status": "OK", "version": SERVER_VERSION})

    async def _get_user(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        target = request.match_info["user_id"]
        target = me if target == "me" else self._require_id(target, "user_id")
        user = self.users.get(target)
        if user is None:
            raise AppError(404, "app.user.missing_account.const")
        return _json_response(user)

    async def _user_by_username(self, request: web.Request) -> web.Response:
        self._session_user(request)
        user = self.find_user(request.match_info["username"])
        if user is None:
            raise AppError(404, "app.user.get_by_username.app_error")
        return _json_response(user)

    async def _users_by_usernames(self, request: web.Request) -> web.Response:
        self._session_user(request)
        names = await self._json_body(request, "usernames")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="usernames")
        wanted = {n.lower() for n in names}
        return _json_response([u for u in self.users.values() if u["username"] in wanted])

    async def _users_by_ids(self, request: web.Request) -> web.Response:
        self._session_user(request)
        ids = await self._json_body(request, "user_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="user_ids")
        return _json_response([self.users[i] for i in dict.fromkeys(ids) if i in self.users])

    def _team_view(self, team: JSON, user_id: str) -> JSON:
        if (team["type"] == "O" and team["allow_open_invite"]) or self._has_team_access(team["id"], user_id):
            # Team.Sanitize for everyone without manage_team
            return team if self._is_admin(user_id) else {**team, "email": "", "invite_id": ""}
        raise _permission_error("view_team", user_id)

    async def _team_by_name(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        team = self.find_team(request.match_info["name"])
        if team is None:
            raise AppError(404, "app.team.get_by_name.missing.app_error")
        return _json_response(self._team_view(team, me))

    async def _get_team(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        team = self.teams.get(self._require_id(request.match_info["team_id"], "team_id"))
        if team is None:
            raise AppError(404, "app.team.get.find.app_error")
        return _json_response(self._team_view(team, me))

    # ------------------------------------------------------------------ channels

    def _new_channel(self, team_id: str, name: str, type_: str, display_name: str, creator_id: str) -> JSON:
        now = self._now_ms()
        channel: JSON = {
            "id": new_id(), "create_at": now, "update_at": now, "delete_at": 0, "team_id": team_id,
            "type": type_, "display_name": display_name, "name": name, "header": "", "purpose": "",
            "last_post_at": now, "total_msg_count": 0, "extra_update_at": 0, "creator_id": creator_id,
            "scheme_id": None, "props": None, "group_constrained": None, "shared": None,
            "total_msg_count_root": 0, "policy_id": None, "last_root_post_at": now,
        }
        self.channels[channel["id"]] = channel
        self.channel_members[channel["id"]] = set()
        return channel

    @staticmethod
    def _dm_name(user_a: str, user_b: str) -> str:
        return "__".join(sorted((user_a, user_b)))  # model.GetDMNameFromIds

    def _get_or_create_dm(self, user_a: str, user_b: str) -> JSON:
        existing = self.direct_channel(user_a, user_b)
        if existing is not None:
            return existing
        channel = self._new_channel("", self._dm_name(user_a, user_b), "D", "", user_a)
        self.channel_members[channel["id"]].update({user_a, user_b})
        return channel

    async def _create_direct(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        ids = await self._json_body(request, "user_ids")
        if not (isinstance(ids, list) and len(ids) == 2 and all(is_valid_id(i) for i in ids)):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="user_ids")
        if me not in ids and not self._is_admin(me):
            raise _permission_error("manage_system", me)
        if any(i not in self.users for i in ids):
            raise AppError(404, "app.user.missing_account.const")
        return _json_response(self._get_or_create_dm(ids[0], ids[1]), 201)

    async def _channel_by_name(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        team_id = self._require_id(request.match_info["team_id"], "team_id")
        name = request.match_info["name"]
        channel = self.find_channel(team_id, name)
        if channel is None:
            raise AppError(404, "app.channel.get_by_name.missing.app_error")
        if channel["type"] == "O":
            if not self._can_read_channel(channel, me):
                raise _permission_error("read_public_channel", me)
        elif not self._has_channel_access(channel["id"], me):
            # api4/channel.go getChannelByName: a private channel the caller cannot read does not
            # exist for them (404, not 403), so its existence does not leak
            raise AppError(404, "app.channel.get_by_name.missing.app_error",
                           detailed=f"teamId={team_id}, name={name}")
        return _json_response(channel)

    def _channel_for_reader(self, request: web.Request, me: str) -> JSON:
        channel = self.channels.get(self._require_id(request.match_info["channel_id"], "channel_id"))
        if channel is None:
            raise AppError(404, "app.channel.get.existing.app_error")
        if not self._can_read_channel(channel, me):
            raise _permission_error("read_channel", me)
        return channel

    async def _get_channel(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        return _json_response(self._channel_for_reader(request, me))

    async def _channel_member(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        channel = self._channel_for_reader(request, me)
        user_id = self._require_id(request.match_info["user_id"], "user_id")
        if not self._in_channel(channel["id"], user_id):
            raise AppError(404, "app.channel.get_member.missing.app_error")
        return _json_response({
            "channel_id": channel["id"], "user_id": user_id, "roles": "channel_user", "last_viewed_at": 0,
            "msg_count": 0, "mention_count": 0, "mention_count_root": 0, "urgent_mention_count": 0,
            "msg_count_root": 0,
            "notify_props": {"desktop": "default", "email": "default", "ignore_channel_mentions": "default",
                             "mark_unread": "all", "push": "default"},
            "last_update_at": channel["create_at"], "scheme_guest": False, "scheme_user": True,
            "scheme_admin": False, "explicit_roles": "",
        })

    async def _channel_posts(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        channel = self._channel_for_reader(request, me)
        try:
            page = max(int(request.query.get("page", "0") or 0), 0)
            per_page = min(max(int(request.query.get("per_page", "60") or 60), 1), 200)
        except ValueError as exc:
            raise AppError(400, "api.context.invalid_url_param.app_error", name="page") from exc
        stored = [p for p in reversed(self.posts) if p["channel_id"] == channel["id"] and not p.get("ephemeral")]
        since = request.query.get("since", "")
        if since not in ("", "0"):
            # GetPostsSince: every post of the channel changed after that time, with no paging
            if not since.isdigit():
                raise AppError(400, "api.context.invalid_url_param.app_error", name="since")
            chosen = [p for p in stored if p["update_at"] > int(since)]
            return _json_response({"order": [p["id"] for p in chosen], "posts": {p["id"]: p for p in chosen},
                                   "next_post_id": "", "prev_post_id": "", "has_next": False})
        chosen = stored[page * per_page:(page + 1) * per_page]
        return _json_response({"order": [p["id"] for p in chosen], "posts": {p["id"]: p for p in chosen},
                               "next_post_id": "", "prev_post_id": "", "has_next": len(stored) > (page + 1) * per_page})

    # ------------------------------------------------------------------ posts

    def _new_post(self, user_id: str, channel_id: str, message: str, *, root_id: str = "", post_type: str = "",
                  props: Mapping[str, Any] | None = None, file_ids: Iterable[str] = (),
                  pending_post_id: str = "") -> JSON:
        now = self._now_ms()
        return {
            "id": new_id(), "create_at": now, "update_at": now, "edit_at": 0, "delete_at": 0, "is_pinned": False,
            "user_id": user_id, "channel_id": channel_id, "root_id": root_id, "original_id": "",
            "message": message, "type": post_type, "props": dict(props or {}), "hashtags": parse_hashtags(message),
            "file_ids": list(file_ids), "pending_post_id": pending_post_id, "reply_count": 0, "last_reply_at": 0,
            "participants": None, "metadata": {},
        }

    def _deduplicate(self, pending_post_id: str) -> JSON | None:
        """app.deduplicateCreatePost: the post a repeated pending_post_id already made, within the TTL."""
        now = self.clock()
        seen = self._pending_post_ids.get(pending_post_id)
        if seen is None or seen[1] <= now:
            self._pending_post_ids[pending_post_id] = ("", now + PENDING_POST_IDS_TTL)
            return None
        if not seen[0]:
            raise AppError(500, "api.post.deduplicate_create_post.pending")
        post = next((p for p in self.posts if p["id"] == seen[0]), None)
        if post is None:
            raise AppError(500, "api.post.deduplicate_create_post.failed_to_get")
        return copy.deepcopy(post)

    async def _create_post(self, user_id: str, channel_id: str, message: str, *, root_id: str = "",
                           post_type: str = "", props: Mapping[str, Any] | None = None,
                           file_ids: Iterable[str] = (), pending_post_id: str = "") -> JSON:
        """app.CreatePost: deduplicate, store, attach files, count, broadcast ``posted``."""
        if pending_post_id:
            found = self._deduplicate(pending_post_id)
            if found is not None:
                return found
            try:
                post = await self._store_post(user_id, channel_id, message, root_id=root_id, post_type=post_type,
                                              props=props, file_ids=file_ids, pending_post_id=pending_post_id)
            except Exception:
                self._pending_post_ids.pop(pending_post_id, None)  # a failed create may be retried
                raise
            self._pending_post_ids[pending_post_id] = (post["id"], self.clock() + PENDING_POST_IDS_TTL)
            return post
        return await self._store_post(user_id, channel_id, message, root_id=root_id, post_type=post_type,
                                      props=props, file_ids=file_ids)

    async def _store_post(self, user_id: str, channel_id: str, message: str, *, root_id: str = "",
                          post_type: str = "", props: Mapping[str, Any] | None = None,
                          file_ids: Iterable[str] = (), pending_post_id: str = "") -> JSON:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise AppError(404, "app.channel.get.existing.app_error")
        if root_id:
            root = next((p for p in self.posts if p["id"] == root_id and not p.get("ephemeral")), None)
            if root is None or root["channel_id"] != channel_id:
                raise AppError(400, "api.post.create_post.root_id.app_error")
        # attachFilesToPost: only the author's own unattached uploads to this channel stick
        attached = [f for f in dict.fromkeys(file_ids)
                    if f in self.files and self.files[f]["user_id"] == user_id
                    and self.files[f]["channel_id"] == channel_id and not self.files[f]["post_id"]]
        post = self._new_post(user_id, channel_id, message, root_id=root_id, post_type=post_type, props=props,
                              file_ids=attached, pending_post_id=pending_post_id)
        for file_id in attached:
            self.files[file_id]["post_id"] = post["id"]
        if attached:
            post["metadata"] = {"files": [copy.deepcopy(self.files[f]) for f in attached]}
        self.posts.append(post)
        channel["last_post_at"] = post["create_at"]
        channel["total_msg_count"] += 1
        if not root_id:
            channel["last_root_post_at"] = post["create_at"]
            channel["total_msg_count_root"] += 1
        await self._broadcast_posted(post, channel)
        if self.on_post_created is not None:
            await self.on_post_created(copy.deepcopy(post))
        return copy.deepcopy(post)

    async def _send_ephemeral(self, target_id: str, post: JSON) -> JSON:
        """app.SendEphemeralPost: only ``target_id``'s connections get ``ephemeral_message``."""
        post = {**post, "type": "system_ephemeral"}
        post.setdefault("id", new_id())
        post.setdefault("create_at", self._now_ms())
        self.posts.append({**copy.deepcopy(post), "ephemeral": True, "user_id": target_id,
                           "author_id": post["user_id"]})
        data = {"post": _dumps(post)}
        broadcast = _broadcast(channel_id=post["channel_id"], user_id=target_id)
        for conn in list(self._conns):
            if conn.user_id == target_id:
                await self._send_event(conn, "ephemeral_message", data, broadcast)
        return post

    def _mentioned_members(self, post: JSON, channel: JSON) -> list[str]:
        members = self.channel_members.get(channel["id"], set())
        if channel["type"] == "D":
            return sorted(m for m in members if m != post["user_id"])
        names = {m[1:].lower().rstrip(_USERNAME_SPECIAL_CHARS) for m in _AT_MENTION.findall(post["message"])}
        return sorted(m for m in members
                      if m != post["user_id"] and self.users.get(m, {}).get("username") in names)

    async def _broadcast_posted(self, post: JSON, channel: JSON) -> None:
        sender = self.users.get(post["user_id"], {})
        sender_name = "@" + sender.get("username", "")
        data: JSON = {
            "channel_display_name": sender_name if channel["type"] == "D" else channel["display_name"],
            "channel_name": channel["name"], "channel_type": channel["type"],
            "post": _dumps(post),  # a JSON string inside the event, as the server sends it
            "sender_name": sender_name, "set_online": True, "team_id": channel["team_id"],
        }
        if post["file_ids"]:
            data["otherFile"] = "true"
            if any(self.files[f]["mime_type"].startswith("image/") for f in post["file_ids"]):
                data["image"] = "true"
        mentions = self._mentioned_members(post, channel)
        if mentions:
            data["mentions"] = _dumps(mentions)
        members = self.channel_members.get(channel["id"], set())
        broadcast = _broadcast(channel_id=channel["id"])
        for conn in list(self._conns):
            if conn.user_id in members:
                await self._send_event(conn, "posted", data, broadcast)

    async def _create_post_handler(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        body = await self._json_body(request, "post")
        if not isinstance(body, dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="post")
        channel_id = body.get("channel_id") or ""
        # api4 userCreatePostPermissionCheckWithContext: create_post in the channel (members);
        # create_post_public is not granted to plain team members by default
        if not isinstance(channel_id, str) or not self._has_channel_access(channel_id, me):
            raise _permission_error("create_post", me)
        props = body.get("props") if isinstance(body.get("props"), dict) else {}
        file_ids = body.get("file_ids") if isinstance(body.get("file_ids"), list) else []
        post = await self._create_post(me, channel_id, str(body.get("message") or ""),
                                       root_id=str(body.get("root_id") or ""), props=props,
                                       file_ids=[str(f) for f in file_ids],
                                       pending_post_id=str(body.get("pending_post_id") or ""))
        return _json_response(post, 201)

    async def _create_ephemeral(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        body = await self._json_body(request, "body")
        if not isinstance(body, dict) or not body.get("user_id"):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="user_id")
        if not isinstance(body.get("post"), dict):
            raise AppError(400, "api.context.invalid_body_param.app_error", name="post")
        if not self._is_admin(me):
            raise _permission_error("create_post_ephemeral", me)
        raw = body["post"]
        post = self._new_post(me, str(raw.get("channel_id") or ""), str(raw.get("message") or ""),
                              root_id=str(raw.get("root_id") or ""),
                              props=raw.get("props") if isinstance(raw.get("props"), dict) else None)
        return _json_response(await self._send_ephemeral(str(body["user_id"]), post), 201)

    async def _get_post(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        post_id = self._require_id(request.match_info["post_id"], "post_id")
        post = next((p for p in self.posts if p["id"] == post_id and not p.get("ephemeral")), None)
        if post is None:
            raise AppError(404, "app.post.get.app_error")
        if not self._can_read_channel(self.channels[post["channel_id"]], me):
            raise _permission_error("read_channel", me)
        return _json_response(post)

    async def click(self, user: UserRef, post_id: str, action_id: str) -> tuple[int, JSON]:
        """``user`` clicks a message button, like ``POST /posts/{id}/actions/{action}``: (status, body)."""
        try:
            return 200, await self._post_action(_id_of(user), post_id, action_id)
        except AppError as err:
            return err.status, err.to_json(new_id())

    async def _do_post_action(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        post_id = self._require_id(request.match_info["post_id"], "post_id")
        return _json_response(await self._post_action(me, post_id, request.match_info["action_id"]))

    async def _post_action(self, user_id: str, post_id: str, action_id: str) -> JSON:
        """app.DoPostActionWithCookie: the stored context goes to the integration; its answer is applied."""
        post = next((p for p in self.posts if p["id"] == post_id and not p.get("ephemeral")), None)
        if post is None:
            raise AppError(404, "app.post.get.app_error")
        channel = self.channels[post["channel_id"]]
        if not self._can_read_channel(channel, user_id):
            raise _permission_error("read_channel", user_id)
        actions = [a for att in (post.get("props") or {}).get("attachments") or [] for a in att.get("actions") or []]
        chosen = next((a for a in actions if a.get("id") == action_id), None)
        if chosen is None:
            raise AppError(404, "api.post.do_action.action_id.app_error")
        integration = chosen.get("integration") or {}
        team = self.teams.get(channel["team_id"]) or {}
        body = {"user_id": user_id, "user_name": self.users[user_id]["username"], "channel_id": channel["id"],
                "channel_name": channel["name"], "team_id": channel["team_id"], "team_domain": team.get("name", ""),
                "post_id": post_id, "trigger_id": new_id(), "type": "", "data_source": "",
                "context": integration.get("context") or {}}
        assert self._http is not None
        async with self._http.post(integration["url"], json=body) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise AppError(400, "api.post.do_action.action_integration.app_error",
                               detailed=f"status={resp.status} body={raw[:200]!r}")
        answer = json.loads(raw or b"{}")
        if answer.get("update"):
            post.update({k: v for k, v in answer["update"].items() if k in ("message", "props")})
        if answer.get("ephemeral_text"):
            await self._send_ephemeral(user_id, self._new_post(self.users[user_id]["id"], channel["id"],
                                                               answer["ephemeral_text"]))
        return {"status": "OK", "trigger_id": body["trigger_id"]}

    # ------------------------------------------------------------------ files

    def _store_file(self, user_id: str, channel_id: str, name: str, data: bytes) -> JSON:
        now = self._now_ms()
        extension = os.path.splitext(name)[1].lstrip(".").lower()
        info: JSON = {
            "id": new_id(), "user_id": user_id, "channel_id": channel_id, "post_id": "", "create_at": now,
            "update_at": now, "delete_at": 0, "name": name, "extension": extension, "size": len(data),
            # model.GetInfoForBytes: the MIME type comes from the extension, not from the client
            "mime_type": (mimetypes.guess_type("x." + extension)[0] or "") if extension else "",
            "mini_preview": None, "remote_id": None, "archived": False,
        }
        self.files[info["id"]] = info
        self.file_contents[info["id"]] = data
        return info

    async def _upload_files(self, request: web.Request) -> web.Response:
        me = self._session_user(request)
        channel_id = request.query.get("channel_id", "")
        infos: list[JSON] = []
        client_ids: list[str] = []

        def check_channel() -> None:
            if not is_valid_id(channel_id):
                raise AppError(400, "api.context.invalid_body_param.app_error", name="channel_id")
            if not self._has_channel_access(channel_id, me):
                raise _permission_error("upload_file", me)

        if not request.content_type.startswith("multipart/"):
            # uploadFileSimple: the body is the file, name and channel in the query
            check_channel()
            name = request.query.get("filename", "")
            infos.append(self._store_file(me, channel_id, name, await request.read()))
        else:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader):
                    continue
                if part.name == "channel_id":
                    channel_id = (await part.text()).strip()
                elif part.name == "client_ids":
                    client_ids.append(await part.text())
                elif part.name == "files":
                    check_channel()
                    infos.append(self._store_file(me, channel_id, part.filename or "", await part.read()))
        if not infos:
            raise AppError(400, "api.file.upload_file.incorrect_number_of_files.app_error")
        return _json_response({"file_infos": infos, "client_ids": client_ids}, 201)

    def _readable_file(self, request: web.Request, me: str) -> JSON:
        info = self.files.get(self._require_id(request.match_info["file_id"], "file_id"))
        if info is None:
            raise AppError(404, "app.file_info.get.app_error")
        # api4/file.go: the uploader, or whoever can read the channel of the post it is attached to
        if info["user_id"] != me and not self._is_admin(me):
            channel = self.channels.get(info["channel_id"])
            if not info["post_id"] or channel is None or not self._can_read_channel(channel, me):
                raise _permission_error("read_channel_content", me)
        return info

    async def _file_info(self, request: web.Request) -> web.Response:
        return _json_response(self._readable_file(request, self._session_user(request)))

    async def _file_content(self, request: web.Request) -> web.Response:
        info = self._readable_file(request, self._session_user(request))
        quoted = urllib.parse.quote(info["name"])
        return web.Response(body=self.file_contents[info["id"]], headers={
            "Content-Type": info["mime_type"] or "application/octet-stream",
            "Content-Disposition": f"attachment;filename=\"{quoted}\"; filename*=UTF-8''{quoted}",
        })
