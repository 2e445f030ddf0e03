"""What "save this message" needs of the fake beyond the REST basics: a team member lookup (api4/team.go
getTeamMember), thread replies as a user, and a user's system roles as an admin sets them.

Posts themselves (``GET /posts/{id}`` with GetPostIfAuthorized's read check, ``POST /posts/ephemeral``
for ``create_post_ephemeral`` holders, ``mentions`` in ``posted`` events) live in ``rest.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from aiohttp import web

from tests.fakes.mattermost.gojson import JSON, AppError, UserRef, _id_of, _json_response, _permission_error


class PostsMixin:
    """Handlers and helpers of FakeMattermost; its state lives on the server."""

    async def _team_member(self, request: web.Request) -> web.Response:
        """GET /teams/{team_id}/members/{user_id}: view_team in that team, then the membership or 404."""
        me = self._session_user(request)
        team_id = self._require_id(request.match_info["team_id"], "team_id")
        user_id = self._require_id(request.match_info["user_id"], "user_id")
        if not self._has_team_access(team_id, me):
            raise _permission_error("view_team", me)
        if team_id not in self.teams or not self._in_team(team_id, user_id):
            raise AppError(404, "app.team.get_member.missing.app_error")
        return _json_response({
            "team_id": team_id, "user_id": user_id, "roles": "team_user", "delete_at": 0,
            "scheme_guest": False, "scheme_user": True, "scheme_admin": False, "explicit_roles": "",
            "create_at": self.teams[team_id]["create_at"],
        })

    async def reply_as(self, user: UserRef, post: UserRef, message: str, *, file_ids: Iterable[str] = ()) -> JSON:
        """``user`` answers in the thread of ``post`` (a root, or a reply: the webapp then replies to
        that reply's root, as the server only takes a root as ``root_id``)."""
        found = next((p for p in self.posts if p["id"] == _id_of(post) and not p.get("ephemeral")), None)
        if found is None:
            raise ValueError(f"no post {_id_of(post)}")
        root_id = found["root_id"] or found["id"]
        return await self.post_as(user, found["channel_id"], message, root_id=root_id, file_ids=file_ids)

    def remove_member(self, channel_id: UserRef, user_id: UserRef) -> None:
        """A user leaves a channel (or is removed); they stay in the team."""
        self.channel_members[_id_of(channel_id)].discard(_id_of(user_id))

    def set_roles(self, user: UserRef, roles: str) -> JSON:
        """A system admin sets a user's system roles (PUT /users/{id}/roles), e.g. "system_user system_admin"
        for a bot that may post ephemeral messages."""
        target = self.users[_id_of(user)]
        target["roles"] = roles
        target["update_at"] = self._now_ms()
        return copy.deepcopy(target)
