"""The one way tests seed the fake: a team, the bot account, people, and channels with their members."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tests.fakes.mattermost.gojson import JSON
from tests.fakes.mattermost.server import FakeMattermost


@dataclass
class Seeded:
    team: JSON
    bot: JSON
    users: dict[str, JSON] = field(default_factory=dict)  # by username, the bot included
    channels: dict[str, JSON] = field(default_factory=dict)  # by name


def seed(fake: FakeMattermost, *, people: Iterable[str] = (), admins: Iterable[str] = (),
         channels: Mapping[str, Iterable[str]] = {}, private: Iterable[str] = (),
         team: str = "ops", bot: str = "recbot", bot_manages_commands: bool = True) -> Seeded:
    """A team named `team` with the bot (allowed to manage slash commands), `people`, system `admins`,
    and `channels` (name -> the usernames in it; "recbot" is the bot; names in `private` are private)."""
    made_team = fake.add_team(team, display_name=team.title())
    bot_user = fake.add_user(bot, is_bot=True, can_manage_commands=bot_manages_commands)
    world = Seeded(made_team, bot_user, {bot: bot_user})
    for name in people:
        world.users[name] = fake.add_user(name)
    for name in admins:
        world.users[name] = fake.add_user(name, roles="system_admin system_user")
    hidden = set(private)
    for name, members in channels.items():
        display = "Town Square" if name == "town-square" else None
        channel = fake.add_channel(made_team, name, type="P" if name in hidden else "O", display_name=display)
        world.channels[name] = channel
        for member in members:
            fake.add_member(channel, world.users[member])
    return world
