"""Disk alerts (SPEC section 5), separated the way Prometheus Alertmanager separates them: `rules`
decide what to post and why, `text` says it, `delivery` posts it exactly once; `sampler` reads the
disks, `store` keeps state, outbox and lease, `service` runs a check, `scheduler` runs the service."""
