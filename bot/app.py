"""The aiohttp application: slash endpoint, health, metrics; start-up and shut-down of the parts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from sqlalchemy.engine import make_url

from bot import i18n, migrate, workers
from bot.alerts.sampler import Sampler
from bot.alerts.scheduler import AlertScheduler
from bot.alerts.service import Alerts
from bot.commands import dispatcher as build_dispatcher
from bot.config import Config
from bot.context import Reply, Services
from bot.digests.scheduler import run_with as run_digests
from bot.dispatch import BUTTON, Dispatcher, Event, Outcome, Result
from bot.errors import Forbidden, NotFound
from bot.i18n import N_, _
from bot.mattermost.dialogs import DIALOG_PATH, DialogDoor
from bot.mattermost.gateway import Gateway
from bot.mattermost.session import COMMAND_TOKEN_SETTING, connect_mattermost
from bot.mattermost.slash import SlashRequest, command_response, response_url_allowed, token_ok
from bot.metrics import REFUSED_COMMAND, Metrics
from bot.render import cap, neutralise
from bot.storage import Storage, make_engine

log = logging.getLogger(__name__)

ANSWER_WITHIN = 2.5  # Mattermost advises 3 s; past this, acknowledge and answer via response_url
TOKEN_CACHE_SECONDS = 5.0
LATE_ANSWER_GRACE = 5.0

SERVICES = web.AppKey("services", Services)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
METRICS = web.AppKey("metrics", Metrics)
POOL = web.AppKey("pool", ThreadPoolExecutor)
STATE = web.AppKey("state", dict)
SCHEDULER = web.AppKey("scheduler", AlertScheduler)
WORKER = web.AppKey("worker", int)


def reply_json(reply: Reply) -> dict[str, Any]:
    # Only a reply posted into the channel can ping anyone; an ephemeral one keeps text as written.
    text = neutralise(reply.text) if reply.in_channel else reply.text
    return command_response(cap(text), in_channel=reply.in_channel, channel_id=reply.channel_id,
                            props=reply.props, attachments=reply.attachments)


async def _token_accepted(app: web.Application, token: str) -> bool:
    """Configured tokens first (no database needed), then the one self-registration stored, which
    counts only while self-registration is on. If the database cannot say, the last value it said
    answers; with none, TokenUnknown."""
    config = app[SERVICES].config
    if token_ok(token, config.mattermost.slash_tokens):
        return True
    if not (config.mattermost.url and config.mattermost.register_command):
        return False
    storage = app[SERVICES].storage
    try:
        stored = await asyncio.get_running_loop().run_in_executor(
            app[POOL], lambda: storage.settings(max_age=TOKEN_CACHE_SECONDS))
        app[STATE]["stored_token"] = stored.get(COMMAND_TOKEN_SETTING, "")
    except Exception as exc:
        if "stored_token" not in app[STATE]:
            raise TokenUnknown(str(exc).splitlines()[0][:200]) from None
    return token_ok(token, [app[STATE]["stored_token"]])


class TokenUnknown(Exception):
    """The registered command's token could not be read (the database is down)."""


async def _read_fields(request: web.Request) -> Any:
    if request.method != "POST":
        return request.query
    try:
        return await request.post()
    except web.HTTPException:
        raise  # aiohttp's own answers, such as 413 for a body over the limit
    except Exception as exc:  # a bogus charset, bytes that are not UTF-8, a gzip header on plain data...
        raise BadRequest(f"the request body could not be read as a form ({type(exc).__name__}); "
                         "send application/x-www-form-urlencoded in UTF-8, as Mattermost does") from None


def _in_config_language(app: web.Application, message: str) -> str:
    """A door's own answer, given before the caller is known: in the config's language."""
    with i18n.speaking(app[SERVICES].config.language):
        return _(message)


class BadRequest(Exception):
    """A request that cannot be read; the message says why."""


async def command(request: web.Request) -> web.Response:
    app = request.app
    started = time.perf_counter()
    try:
        fields = await _read_fields(request)
    except BadRequest as exc:
        app[METRICS].observe(REFUSED_COMMAND, Outcome.REFUSED, time.perf_counter() - started)
        return web.json_response({"error": str(exc)}, status=400)
    slash = SlashRequest.from_fields(fields, request.headers.get("Authorization", ""))
    # The token check comes before anything else looks at the request.
    try:
        accepted = await _token_accepted(app, slash.token)
    except TokenUnknown as exc:
        log.warning("slash: cannot check a token against the registered command's (%s)", exc)
        return web.json_response({"error": "the database is not answering, so this token cannot be checked; "
                                           "try again shortly"}, status=503)
    if not accepted:
        app[METRICS].observe(REFUSED_COMMAND, Outcome.REFUSED, time.perf_counter() - started)
        return web.json_response({"error": "this request's token is not one recbot accepts"}, status=401)
    if not slash.user_id or not slash.user_name:
        app[METRICS].observe(REFUSED_COMMAND, Outcome.USER_ERROR, time.perf_counter() - started)
        return web.json_response(command_response(_in_config_language(app, N_(
            "The request has no user_id/user_name; it must come from Mattermost's slash command."))), status=400)
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(app[POOL], app[DISPATCHER].handle, app[SERVICES], slash)
    try:
        result: Result = await asyncio.wait_for(asyncio.shield(work), ANSWER_WITHIN)
    except TimeoutError:
        if not response_url_allowed(app[SERVICES].config, slash.response_url):
            result = await work
        else:
            task = asyncio.create_task(_answer_later(app, work, slash.response_url, started))
            app[STATE].setdefault("later", set()).add(task)
            task.add_done_callback(app[STATE]["later"].discard)
            return web.json_response(command_response(_in_config_language(
                app, N_("Working on it; the answer will follow here."))))
    app[METRICS].observe(result.command, result.outcome, time.perf_counter() - started)
    return web.json_response(reply_json(result.reply))


async def _answer_later(app: web.Application, work: asyncio.Future, url: str, started: float) -> None:
    result: Result = await work
    app[METRICS].observe(result.command, result.outcome, time.perf_counter() - started)
    body = reply_json(result.reply)
    delay = 1.0
    for attempt in range(5):  # a response_url takes 5 uses within 30 minutes
        try:
            async with ClientSession(timeout=ClientTimeout(total=10)) as session, \
                    session.post(url, json=body) as resp:
                if resp.status < 500:
                    if resp.status >= 400:
                        log.warning("response_url refused the late answer: HTTP %s", resp.status)
                    return
        except OSError as exc:
            log.warning("response_url unreachable (attempt %d): %s", attempt + 1, exc)
        await asyncio.sleep(delay)
        delay *= 2


async def action(request: web.Request) -> web.Response:
    """A click on an alert button; the signed context is the only credential Mattermost sends."""
    alerts = request.app[SERVICES].alerts
    if alerts is None:
        return web.json_response({"ephemeral_text": _in_config_language(
            request.app, N_("Disk alerts are not enabled on this bot."))}, status=404)
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body is not an object")
        context = body.get("context") or {}
        # Mattermost sets user_id from the clicker's session; user_name is only what the body says.
        user_id = body.get("user_id")
        if not isinstance(context, dict) or not isinstance(user_id, str) or not user_id:
            raise ValueError("no context object or no user_id")
    except (ValueError, LookupError, RecursionError):  # bad charset, not JSON, nested past reason, wrong shape
        return web.json_response({"ephemeral_text": _in_config_language(
            request.app, N_("The request is not a Mattermost button click."))}, status=400)
    # Mattermost sends the clicker's name too, but only the id is its word; the name is a label.
    name = str(body.get("user_name") or "")
    event = Event(SlashRequest(user_id=user_id, user_name=name, text=""), source=BUTTON, context=context)
    started = time.perf_counter()
    result: Result = await asyncio.get_running_loop().run_in_executor(
        request.app[POOL], request.app[DISPATCHER].handle, request.app[SERVICES], event)
    request.app[METRICS].observe(result.command, result.outcome, time.perf_counter() - started)
    return web.json_response({"ephemeral_text": result.reply.text}, status=_status_of(result))


def _status_of(result: Result) -> int:
    """An outcome in HTTP terms (only the button endpoint answers in status codes)."""
    if result.outcome == Outcome.OK:
        return 200
    if result.outcome == Outcome.ERROR:
        return 500
    if result.error is Forbidden:
        return 403
    return 404 if result.error is NotFound else 400


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers and the alert loop (if any) checks; else 503 saying which."""
    app = request.app
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(app[POOL], app[SERVICES].storage.probe)
    except Exception as exc:  # any failure of the database is "not healthy"; the details go to the log only
        log.warning("healthz: the database failed the read/write check: %s", str(exc).splitlines()[0][:300])
        return web.json_response({"status": "unhealthy", "database": "failing: it did not complete a read and a "
                                  "write in time; the bot's log has the details"}, status=503)
    body: dict = {"status": "ok", "database": "ok", "worker": app[WORKER]}
    alerts = app[SERVICES].alerts
    if alerts is not None:
        body["alerts"] = await loop.run_in_executor(app[POOL], alerts.health_report)
        if body["alerts"]["status"] == "failing":
            body["status"] = "unhealthy"
            return web.json_response(body, status=503)
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[METRICS].render(), content_type="text/plain", charset="utf-8")


async def _connect_mattermost(app: web.Application) -> None:
    await connect_mattermost(app[SERVICES], app[DISPATCHER], app[POOL], app[METRICS], worker=app[WORKER])


def pool_size(dialect: str) -> int:
    """Threads that run commands. SQLite works inside this process, so threads beyond the two that
    overlap one command's SQL with another's Python only queue on the GIL (measured: at 10 concurrent
    finds, 8 threads cost 50% more CPU per request than 2). MariaDB's time is mostly spent waiting
    on the server, so more threads keep more queries in flight."""
    return 2 if dialect == "sqlite" else 8


def new_metrics(dispatcher: Dispatcher, processes: int = 1) -> Metrics:
    return Metrics(list(dispatcher.table), [Outcome.OK, Outcome.USER_ERROR, Outcome.ERROR, Outcome.REFUSED],
                   processes)


@web.middleware
async def _last_resort(request: web.Request, handler: Any) -> web.StreamResponse:
    """Anything a handler did not expect becomes one JSON answer with a ref, and one log line."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        ref = uuid.uuid4().hex[:8]
        log.exception("%s %s failed (ref %s)", request.method, request.path, ref)
        return web.json_response({"error": f"something broke on our side (ref {ref}); it was logged"}, status=500)


def build_app(services: Services, dispatcher: Dispatcher | None = None, *, threads: int | None = None,
              worker: int = 0, counters: Metrics | None = None) -> web.Application:
    """The server of one process; `worker` is its index among server.workers (0 does the once-per-bot work),
    `counters` the metrics all the processes share."""
    app = web.Application(client_max_size=1024 * 1024, middlewares=[_last_resort])
    app[WORKER] = worker
    app[SERVICES] = services
    app[DISPATCHER] = dispatcher or build_dispatcher()
    app[METRICS] = counters or new_metrics(app[DISPATCHER])
    app[METRICS].use_row(worker)
    app[POOL] = ThreadPoolExecutor(max_workers=threads or pool_size(services.storage.dialect),
                                   thread_name_prefix="recbot")
    app[STATE] = {}
    app.router.add_route("POST", "/mattermost/command", command)
    app.router.add_route("GET", "/mattermost/command", command)
    app.router.add_post("/mattermost/action", action)
    app.router.add_post(DIALOG_PATH, DialogDoor(services, app[DISPATCHER], app[POOL], app[METRICS]).submitted)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    run_digests(app, services, worker)  # the digest rounds, in worker 0 when Mattermost is configured
    if services.alerts is not None and worker == 0:
        app[SCHEDULER] = AlertScheduler(services.alerts)

        async def start_alerts(app: web.Application) -> None:
            await app[SCHEDULER].start()

        async def stop_alerts(app: web.Application) -> None:
            await app[SCHEDULER].stop()

        app.on_startup.append(start_alerts)
        app.on_cleanup.append(stop_alerts)

    if services.gateway is not None:
        async def start_mattermost(app: web.Application) -> None:
            app[STATE]["mattermost"] = asyncio.create_task(_connect_mattermost(app))

        app.on_startup.append(start_mattermost)

    async def shutdown(app: web.Application) -> None:
        task = app[STATE].get("mattermost")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        gateway = app[SERVICES].gateway
        if gateway is not None:
            await gateway.close()
        later = list(app[STATE].get("later", ()))
        if later:
            # Late answers get a few seconds to go out; a response_url that hangs must not hold the stop.
            _, stuck = await asyncio.wait(later, timeout=LATE_ANSWER_GRACE)
            for task in stuck:
                task.cancel()
            if stuck:
                log.warning("stopping: %d late answer(s) to response_url given up", len(stuck))
        app[POOL].shutdown(wait=True)
        app[SERVICES].storage.dispose()

    app.on_cleanup.append(shutdown)
    return app


def run(config: Config) -> int:
    engine = make_engine(config.database.url)
    backend = migrate.upgrade(engine)
    log.info("database ready (%s), search: %s", make_url(config.database.url).render_as_string(hide_password=True),
             backend)
    engine.dispose()  # each serving process opens its own connections, after the fork
    if not config.mattermost.slash_tokens and not config.mattermost.url:
        log.warning("no slash token is accepted yet: set mattermost.slash_tokens (REC_MATTERMOST__SLASH_TOKENS) "
                    "or mattermost.url for self-registration; meanwhile try: python -m bot shell --user NAME")
    dispatcher = build_dispatcher()
    counters = new_metrics(dispatcher, config.server.workers)  # before the fork, so every process shares it
    index, children = workers.fork(config.server.workers)
    try:
        return _serve(config, index, children, dispatcher, counters)
    finally:
        workers.stop(children)


def _serve(config: Config, index: int, children: list[int], dispatcher: Dispatcher, counters: Metrics) -> int:
    storage = Storage(make_engine(config.database.url, config.database.timeout_seconds))
    gateway = Gateway(config) if config.mattermost.url else None
    sampler = Sampler()
    alerts = Alerts(storage, config, gateway, sampler=sampler, metrics=counters) if config.alerts.channel else None
    app = build_app(Services(storage, config, gateway, alerts, sampler=sampler), dispatcher, worker=index,
                    counters=counters)
    if children:
        async def watch(app: web.Application) -> None:
            while True:
                await asyncio.sleep(2)
                for pid, code in workers.exited(children):
                    log.error("worker process %d exited with status %d; the other %d process(es) keep serving; "
                              "restart recbot to bring it back", pid, code, len(children) + 1)

        async def start_watch(app: web.Application) -> None:
            app[STATE]["watch"] = asyncio.create_task(watch(app))

        async def stop_watch(app: web.Application) -> None:
            app[STATE]["watch"].cancel()

        app.on_startup.append(start_watch)
        app.on_cleanup.append(stop_watch)
    if index == 0:
        log.info("serving /mattermost/command, /healthz and /metrics on http://%s:%s with %d process(es)",
                 config.server.host, config.server.port, config.server.workers)
    try:
        # No access log: a GET slash request carries its token in the query string.
        web.run_app(app, host=config.server.host, port=config.server.port, print=None, access_log=None,
                    reuse_port=config.server.workers > 1)
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            raise  # not a listening problem: let it show as what it is
        log.error("cannot listen on %s:%s (%s); free the port or set server.port", config.server.host,
                  config.server.port, exc.strerror or exc)
        return 1
    return 0
