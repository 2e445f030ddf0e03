"""A stateful fake Mattermost server, as a package: `gojson` (the wire format and errors), `rest`,
`commands` (the API and executing), `websocket`, and `server` (state, seeding, plumbing)."""

from tests.fakes.mattermost.gojson import JSON, is_valid_id, new_id
from tests.fakes.mattermost.server import FakeMattermost

__all__ = ["JSON", "FakeMattermost", "is_valid_id", "new_id"]
