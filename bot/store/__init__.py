"""The store: records, people (users, grants, shares), settings and audit, over SQLAlchemy Core.
`bot.storage` is its entry; `front.Storage` joins the parts (`db`, `visibility`, `records`,
`people`, `settings`), and search execution lives beside its planner in `bot.search`."""
