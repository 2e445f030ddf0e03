"""Writes that a cluster may refuse once and accept the next time: which errors those are, and the
bounded, jittered attempts at a write.

On MariaDB Galera a transaction runs on one node and is certified against the others' at COMMIT; the
loser gets error 1213 (the same as an InnoDB deadlock) and has been rolled back entirely, so running
it again is safe and almost always succeeds. A node that has just left the primary component answers
1047 at once, before doing anything; its connection is dropped (bot.store.db) so the next attempt
goes, through HAProxy, to a node that serves.

A lost connection (2006, 2013) is not retried: it is also what a frozen server's timeout looks like,
where every attempt would wait the whole timeout again, and after COMMIT the write may have happened.
The pool's pre-ping already replaces connections to a node that died while they sat idle.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger("bot.store")

ATTEMPTS = 6  # the first try and five more: about 0.6 s of back-off at most
BASE_DELAY = 0.01
MAX_DELAY = 0.3

ROLLED_BACK = {1213: "a deadlock or a cluster certification conflict"}
NOT_SENT = {1047: "a node outside the cluster's primary component"}

F = TypeVar("F", bound=Callable[..., Any])


class _Open(threading.local):
    depth = 0  # transactions open on this thread: a write inside one is retried by the outermost


open_transactions = _Open()


def mysql_code(exc: BaseException) -> int | None:
    """The MySQL/MariaDB error number behind a SQLAlchemy error, if there is one."""
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def worth_retrying(exc: BaseException) -> str | None:
    """Why running the write again is safe and may succeed, or None when it is not."""
    code = mysql_code(exc)
    if code in ROLLED_BACK:
        return ROLLED_BACK[code]
    if code in NOT_SENT and not getattr(exc, "recbot_at_commit", False):
        return NOT_SENT[code]
    return None


def backoff(attempt: int) -> float:
    """Full jitter: two writers that collided do not collide again in lockstep."""
    return random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2 ** attempt))  # noqa: S311 (timing, not secrets)


def retried(method: F) -> F:
    """Run a write again, after a jittered pause, when the database refused it in a way that left
    nothing written (see worth_retrying), up to ATTEMPTS times.

    The decorated function must be safe to run again from the top: it reads what it decides on inside
    its transaction, and does nothing outside the database before its last transaction commits.
    Called inside a transaction that is already open, it runs once: the outer write is the one to
    retry, since the refusal rolled the whole transaction back.
    """

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        if open_transactions.depth:
            return method(*args, **kwargs)
        for attempt in range(ATTEMPTS):
            try:
                return method(*args, **kwargs)
            except DBAPIError as exc:
                why = worth_retrying(exc)
                if why is None or attempt + 1 == ATTEMPTS:
                    raise
                log.info("store: %s refused by %s; attempt %d of %d", method.__qualname__, why,
                         attempt + 2, ATTEMPTS)
                time.sleep(backoff(attempt))
        raise AssertionError("unreachable")  # the loop returns or raises

    return run  # type: ignore[return-value]  # same signature as the method it wraps
