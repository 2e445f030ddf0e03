"""What every handler gets: the Context (caller, request, services) and the Reply it returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot.alerts.sampler import Sampler
from bot.config import Config, zone_or_none
from bot.duties import new_holder, now_utc
from bot.errors import NotFound
from bot.i18n import _
from bot.mattermost.slash import SlashRequest
from bot.storage import Storage, User

if TYPE_CHECKING:
    from bot.alerts.service import Alerts
    from bot.digests.service import Digests
    from bot.dispatch import Command, Event
    from bot.mattermost.gateway import Gateway


@dataclass(frozen=True)
class Reply:
    text: str
    in_channel: bool = False
    channel_id: str | None = None
    props: dict[str, Any] | None = None
    attachments: list[dict[str, Any]] | None = None


@dataclass
class Services:
    """The long-lived parts, built once per process and handed to every request."""

    storage: Storage
    config: Config
    gateway: Gateway | None = None  # the Mattermost gateway, when one is configured
    alerts: Alerts | None = None  # the disk alerts, when alerts.channel is configured
    sampler: Sampler = field(default_factory=Sampler)  # reads watched disks with a timeout
    digests: Digests | None = None  # the digest poster, when Mattermost is configured
    holder: str = field(default_factory=new_holder)  # this process's name in the once-per-bot lease
    clock: Callable[[], datetime] = now_utc  # what the once-per-bot lease reads the time from


@dataclass
class Context:
    services: Services
    request: SlashRequest
    caller: User
    settings: dict[str, float]
    commands: Sequence[Command] = field(default_factory=tuple)  # the command table, for help
    event: Event | None = None  # the Event itself (a button's context, a DM's files)

    @property
    def storage(self) -> Storage:
        return self.services.storage

    @property
    def config(self) -> Config:
        return self.services.config

    @property
    def file_link(self) -> Callable[[str], str] | None:
        """How to link a Mattermost file in a reply, when Mattermost is configured."""
        gateway = self.services.gateway
        return gateway.file_url if gateway is not None else None

    @property
    def bot_name(self) -> str:
        """The bot's username in Mattermost (what members type after @), else the default."""
        gateway = self.services.gateway
        return gateway.me.username if gateway is not None and gateway.me.username else "recbot"

    @property
    def zone(self) -> ZoneInfo:
        """The caller's timezone as Mattermost says it, else the config's."""
        return zone_or_none(self.caller.timezone or "") or zone_or_none(self.config.timezone) or ZoneInfo("UTC")

    @property
    def page_size(self) -> int:
        return int(self.settings["page_size"])

    def users(self, names: Sequence[str]) -> list[User]:
        """Resolve @names to recbot users by Mattermost's ids, never by a stored name.

        A stored username is a cache: the account that held a name may have been renamed and the name
        taken by someone else. So a name resolves to the id Mattermost sent with the request
        (`user_mentions_ids`), else to a fresh lookup; only without Mattermost (the local shell) do
        stored names answer.
        """
        gateway = self.services.gateway
        known = self.storage.users_by_username(names) if gateway is None else {}
        found: list[User] = []
        for name in names:
            key = name.lower()
            mm_id = self.request.user_mentions.get(key)
            if mm_id is None and gateway is not None:
                mm_id = gateway.user_id_by_username(key)
            if mm_id is None:
                if key in known:
                    found.append(known[key])
                    continue
                raise NotFound(_("@{name} is not a Mattermost user; check the spelling", name=name)
                               if gateway is not None else
                               _("@{name} is not a user recbot knows; check the spelling, "
                                 "or ask them to type /{trigger} help once",
                                 name=name, trigger=self.config.mattermost.trigger))
            user, _created = self.storage.ensure_user(mm_id, key, self.config.newcomer_role)
            found.append(user)
        return found
