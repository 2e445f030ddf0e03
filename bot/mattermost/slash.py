"""Mattermost's slash-command request and response formats, and the token check."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from bot.config import Config


class MultiMapping(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def getall(self, key: str, default: Any = None) -> list[Any]: ...


@dataclass(frozen=True)
class SlashRequest:
    """One /rec invocation, as Mattermost's command.go sends it (form fields or GET query)."""

    user_id: str
    user_name: str
    text: str
    token: str = field(default="", repr=False)
    team_id: str = ""
    team_domain: str = ""
    channel_id: str = ""
    channel_name: str = ""
    command: str = "/rec"
    trigger_id: str = ""
    response_url: str = ""
    user_mentions: dict[str, str] = field(default_factory=dict)  # username -> Mattermost user id
    channel_mentions: dict[str, str] = field(default_factory=dict)  # channel name -> channel id

    @classmethod
    def from_fields(cls, form: MultiMapping, auth_header: str = "") -> SlashRequest:
        def one(name: str) -> str:
            value = form.get(name, "")
            return value if isinstance(value, str) else ""

        token = one("token")
        if not token and auth_header.startswith("Token "):
            token = auth_header[len("Token "):].strip()
        return cls(
            user_id=one("user_id"), user_name=one("user_name"), text=one("text"), token=token,
            team_id=one("team_id"), team_domain=one("team_domain"), channel_id=one("channel_id"),
            channel_name=one("channel_name"), command=one("command") or "/rec", trigger_id=one("trigger_id"),
            response_url=one("response_url"),
            user_mentions=_pairs(form, "user_mentions", "user_mentions_ids"),
            channel_mentions=_pairs(form, "channel_mentions", "channel_mentions_ids"),
        )


def _pairs(form: MultiMapping, names: str, ids: str) -> dict[str, str]:
    # Mattermost repeats the fields in the same order, one name and one id per mention.
    return {n.lower(): i for n, i in zip(form.getall(names, []), form.getall(ids, []), strict=False)}


def token_ok(given: str, accepted: Iterable[str]) -> bool:
    """Constant time in the token's content: every accepted token is compared, no early exit."""
    given_bytes = given.encode()
    ok = False
    for token in accepted:
        if token:
            ok |= hmac.compare_digest(given_bytes, token.encode())
    return ok and bool(given)


def command_response(text: str, *, in_channel: bool = False, channel_id: str | None = None,
                     props: dict[str, Any] | None = None, attachments: list[dict] | None = None) -> dict[str, Any]:
    """The snake_case CommandResponse of server/public/model/command_response.go."""
    body: dict[str, Any] = {"response_type": "in_channel" if in_channel else "ephemeral", "text": text}
    if channel_id:
        body["channel_id"] = channel_id
    if props:
        body["props"] = props
    if attachments:
        body["attachments"] = attachments
    return body


def response_url_allowed(config: Config, url: str) -> bool:
    """Only the configured Mattermost's own hooks: an accepted request must not make the bot post
    to any address it names."""
    if not url:
        return False
    if not config.mattermost.url:
        return url.startswith(("http://", "https://"))
    want, got = urlsplit(config.mattermost.url), urlsplit(url)
    return (got.scheme, got.hostname, got.port) == (want.scheme, want.hostname, want.port)
