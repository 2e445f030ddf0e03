"""Everything that speaks Mattermost's protocol: `slash` (the slash request and response and the
token check), `gateway` (REST over mattermostautodriver: identity, lookups, posts, files,
registration), `websocket` (the listener for direct messages) and `direct` (a DM becomes a record)."""
