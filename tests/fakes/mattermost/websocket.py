"""The WebSocket: the authentication challenge, hello, and events to connected users."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.mattermost.gojson import (
    JSON,
    SERVER_VERSION,
    AppError,
    _broadcast,
    _dumps,
    _WsConn,
)


class WebSocketMixin:
    """Handlers and helpers of FakeMattermost for the WebSocket."""

    # ------------------------------------------------------------------ WebSocket

    async def _send(self, conn: _WsConn, payload: JSON) -> None:
        async with conn.lock:
            if conn.ws.closed:
                return
            try:
                await conn.ws.send_str(_dumps(payload))
            except ConnectionError:
                return

    async def _send_event(self, conn: _WsConn, event: str, data: JSON, broadcast: JSON) -> None:
        async with conn.lock:
            if conn.ws.closed:
                return
            payload = {"event": event, "data": data, "broadcast": broadcast, "seq": conn.seq}
            conn.seq += 1
            try:
                await conn.ws.send_str(_dumps(payload))
            except ConnectionError:
                return

    async def _send_hello(self, conn: _WsConn) -> None:
        assert conn.user_id is not None
        data = {"connection_id": conn.connection_id, "server_version": f"{SERVER_VERSION}.0.fake.false"}
        await self._send_event(conn, "hello", data, _broadcast(user_id=conn.user_id))

    async def _ws_error(self, conn: _WsConn, seq: Any, error_id: str, status: int) -> None:
        err = AppError(status, error_id).to_json("")
        del err["request_id"]
        await self._send(conn, {"status": "FAIL", "seq_reply": seq, "error": err})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        # A token in the upgrade request authenticates at once (hello follows, the challenge is then
        # ignored); otherwise the client must send authentication_challenge (websocket_router.go).
        try:
            header_user: str | None = self._session_user(request)
        except AppError:
            header_user = None
        ws = web.WebSocketResponse(timeout=2.0)
        await ws.prepare(request)
        conn = _WsConn(ws=ws)
        self._conns.append(conn)
        try:
            if header_user is not None:
                conn.user_id = header_user
                self.ws_authentications += 1
                await self._send_hello(conn)
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    req = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(req, dict):
                    continue
                if not await self._ws_request(conn, req):
                    break
        finally:
            self._conns.remove(conn)
        return ws

    async def _ws_request(self, conn: _WsConn, req: JSON) -> bool:
        """One client request; False when the connection must close."""
        action, seq = req.get("action"), req.get("seq")
        if not action:
            await self._ws_error(conn, seq, "api.web_socket_router.no_action.app_error", 400)
            return True
        if not isinstance(seq, int) or seq <= 0:
            await self._ws_error(conn, seq, "api.web_socket_router.bad_seq.app_error", 400)
            return True
        if action == "authentication_challenge":
            if conn.user_id is not None:
                return True  # already authenticated: the server says nothing
            data = req.get("data")
            token = data.get("token") if isinstance(data, dict) else None
            user_id = self.tokens.get(token) if isinstance(token, str) else None
            if user_id is None:
                await conn.ws.close()  # the server closes on a bad or missing token
                return False
            conn.user_id = user_id
            self.ws_authentications += 1
            ok = {"status": "OK", "seq_reply": seq}
            if self.hello_first:
                await self._send_hello(conn)
                await self._send(conn, ok)
            else:
                await self._send(conn, ok)
                await self._send_hello(conn)
            return True
        if conn.user_id is None:
            await self._ws_error(conn, seq, "api.web_socket_router.not_authenticated.app_error", 401)
        elif action in ("user_typing", "get_statuses", "get_statuses_by_ids", "presence", "posted_notify_ack",
                        "user_update_active_status"):
            await self._send(conn, {"status": "OK", "seq_reply": seq})
        else:
            await self._ws_error(conn, seq, "api.web_socket_router.bad_action.app_error", 501)
        return True
