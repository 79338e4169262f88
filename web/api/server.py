"""The dashboard's FastAPI app: JSON API over the in-memory cache, live events, the built UI.

`create_app(settings)` builds it; the module attribute `app` (built on first access, so
importing this module does no work) lets `cd web && uvicorn api.server:app --reload
--port 8080` run it with settings from the environment.

Requests never touch the DHT or the RPC: they read bodies the poller precomputed in
`DashboardState` (see `api.state`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse

from api import models
from api.poller import ChainFactory, Poller, SwarmFactory
from api.settings import DashboardSettings
from api.state import DEFAULT_GOSSIP, DEFAULT_PAGE, DEFAULT_SERIES, DashboardState
from hivemind_exp.swarm.names import normalize_name, peer_name

log = logging.getLogger(__name__)

JSON = "application/json"
PEER_ID_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{1,128}$")
EVENTS_HEARTBEAT_S = 15.0
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": models.ErrorBody}, 413: {"model": models.ErrorBody}, 422: {"model": models.ErrorBody}}

NOT_BUILT_HTML = """<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>RL Swarm dashboard: UI not built</title>
<body style="font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5">
<h1>The dashboard UI is not built</h1>
<p>The API is running (try <a href="/api/round_and_stage">/api/round_and_stage</a> or
<a href="/docs">/docs</a>), but there is no built UI in <code>{dist}</code>.</p>
<p>Build it once:</p><pre>cd web/ui &amp;&amp; npm install &amp;&amp; npm run build</pre>
<p>or, for development with hot reload, run <code>npm run dev</code> in <code>web/ui</code>
and open the address it prints.</p></body></html>"""


def _json(body: bytes, status: int = 200) -> Response:
    return Response(content=body, media_type=JSON, status_code=status)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


class _SlotStream(StreamingResponse):
    """A stream that gives its slot back however it ends (done, client gone, or never started)."""

    def __init__(self, content: Any, release: Any, **kw: Any):
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


# GET paths (no query string) answered straight from the precomputed bodies -> state key.
FAST_PATHS = {"/api/round_and_stage": "round_and_stage", "/api/leaderboard": "leaderboard",
              "/api/leaderboard-cumulative": "leaderboard_cumulative", "/api/rewards-history": "rewards_history",
              "/api/gossip": "gossip", "/api/nodes": "nodes", "/api/me": "me"}
_FAST_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-cache")]


class CachedBodies:
    """Pure ASGI layer serving the default form of the read endpoints from the cache.

    Those requests (the UI's and most clients') skip FastAPI's routing, parameter parsing and
    response classes: one dict lookup and two sends. Everything else, including the same
    paths with a query string, goes to the app. The matched FastAPI route is put in the scope
    so request metrics still carry the route template.
    """

    def __init__(self, app: Any, state: DashboardState, routes: Any):
        self.app = app
        self.state = state
        self._routes_source = routes
        self._routes: dict[str, Any] | None = None

    def _route(self, path: str) -> Any:
        if self._routes is None:
            self._routes = {r.path: r for r in self._routes_source() if getattr(r, "path", None) in FAST_PATHS}
        return self._routes.get(path)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        key = FAST_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if key is None or scope.get("method") != "GET" or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        body = self.state.bodies[key]
        scope["route"] = self._route(scope["path"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*_FAST_HEADERS, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def default_swarm_factory(settings: DashboardSettings) -> SwarmFactory:
    """The HTTP reader when --swarm-reader-url is set (no hivemind/torch here), else a DHT client in-process."""
    url = settings.swarm_reader_url
    if url is not None:
        def remote(_initial_peers: list[str]) -> Any:
            from api.sources import HttpSwarmReader

            return HttpSwarmReader(url, timeout=settings.dht_timeout, max_bytes=settings.swarm_reader_max_bytes)

        return remote

    def build(initial_peers: list[str]) -> Any:
        import importlib.util

        from api.sources import DhtSwarmReader

        if importlib.util.find_spec("hivemind") is None:
            raise RuntimeError("hivemind is not installed here (the dashboard image leaves it out): set "
                               "RLSWARM_SWARM_READER_URL to an `rl-swarm swarm-reader`, or install requirements.txt")
        return DhtSwarmReader.connect(
            initial_peers, dht_namespace=settings.dht_namespace,
            coordinator_peer_id=settings.trusted_coordinator(list(initial_peers)),
            dht_identity_file=settings.dht_identity_file, dht_timeout=settings.dht_timeout,
            tmp_prefix="rlswarm-dashboard-")

    return build


def default_chain_factory(settings: DashboardSettings) -> ChainFactory:
    def build() -> Any:
        from api.sources import ContractChainReader

        return ContractChainReader.from_settings(settings)

    return build


async def _read_capped_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it grows past `limit` bytes (checked while streaming, not after)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: DashboardSettings | None = None, *, swarm_factory: SwarmFactory | None = None,
               chain_factory: ChainFactory | None = None) -> FastAPI:
    """The dashboard app. Factories default to the real DHT and contract readers."""
    from hivemind_exp.common.settings_base import load_settings

    cfg = settings if settings is not None else load_settings(DashboardSettings)
    state = DashboardState(history_rounds=cfg.history_rounds, max_peers=cfg.max_peers, gossip_size=cfg.gossip_size,
                           login_url=cfg.login_origin)
    poller = Poller(cfg, state, swarm_factory or default_swarm_factory(cfg),
                    chain_factory if chain_factory is not None else default_chain_factory(cfg))
    # Open live streams, all and per client address. Checked and taken in one step with no await
    # in between (the event loop is single-threaded), so a burst cannot overshoot the caps.
    event_clients = 0
    event_clients_by_ip: dict[str, int] = {}

    def take_event_slot(ip: str) -> Response | None:
        nonlocal event_clients
        if event_clients_by_ip.get(ip, 0) >= cfg.events_max_per_client:
            return _error(429, f"this client already holds {cfg.events_max_per_client} live-update streams; "
                          "close one (one per browser tab is enough)")
        if event_clients >= cfg.events_max_clients:
            return _error(503, f"too many live-update clients ({cfg.events_max_clients}); reload later")
        event_clients += 1
        event_clients_by_ip[ip] = event_clients_by_ip.get(ip, 0) + 1
        return None

    def release_event_slot(ip: str) -> None:
        nonlocal event_clients
        event_clients -= 1
        left = event_clients_by_ip.get(ip, 1) - 1
        if left > 0:
            event_clients_by_ip[ip] = left
        else:
            event_clients_by_ip.pop(ip, None)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from hivemind_exp.common.telemetry import setup_telemetry

        try:
            setup_telemetry("dashboard")
        except Exception as exc:  # metrics are optional; the dashboard is not
            log.warning("telemetry not started: %s", exc)
        await poller.start()
        try:
            yield
        finally:
            await poller.stop()

    # FastAPI's own OpenTelemetry (spans + metrics per request, on once a global provider
    # exists) is off: it tripled the cost of a cached request, and TelemetryMiddleware
    # below already records latency/status by route in the team's metric names.
    app = FastAPI(title="RL Swarm dashboard", version="0.1.0", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  description="Round/stage, leaderboards, reward history, gossip and nodes of an RL Swarm, "
                  "read from the Hivemind DHT and the SwarmCoordinator contract. Times are unix seconds; "
                  "rewards are points.")
    app.state.dashboard = state
    app.state.poller = poller
    app.state.settings = cfg

    from hivemind_exp.common.telemetry import Telemetry, instrument_fastapi

    # Added before the telemetry middleware, so it runs inside it (cached answers are measured too).
    app.add_middleware(CachedBodies, state=state, routes=lambda: app.routes)
    instrument_fastapi(app, Telemetry.dashboard_metrics, service_name="dashboard")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "body"))
            parts.append(f"{loc or 'request'}: {e.get('msg')} (got {e.get('input')!r})")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    # ------------------------------------------------------------------ health

    async def health() -> Response:
        ok, body = state.health(cfg.dht_stale_after, cfg.chain_stale_after)
        return _json(body.model_dump_json().encode(), 200 if ok else 503)

    for path in ("/api/healthz", "/health"):
        app.add_api_route(path, health, methods=["GET"], response_model=models.Health, tags=["health"],
                          responses={503: {"model": models.Health, "description": "a source is stale"}},
                          summary="Health: 503 with reasons when the DHT or chain is stale")

    # ------------------------------------------------------------------ swarm views

    @app.get("/api/round_and_stage", response_model=models.RoundAndStage, tags=["swarm"])
    async def round_and_stage() -> Response:
        return _json(state.bodies["round_and_stage"])

    @app.get("/api/leaderboard", response_model=models.Leaderboard, tags=["swarm"], responses=ERRORS)
    async def leaderboard(
        limit: Annotated[int, Query(ge=1, le=500, description="entries per page")] = DEFAULT_PAGE,
        offset: Annotated[int, Query(ge=0, le=1_000_000, description="entries to skip")] = 0,
        q: Annotated[str | None, Query(max_length=128, description="filter: part of a name or peer ID")] = None,
    ) -> Response:
        if limit == DEFAULT_PAGE and offset == 0 and not q:
            return _json(state.bodies["leaderboard"])
        return _json(state.leaderboard_body(limit, offset, q))

    @app.get("/api/leaderboard-cumulative", response_model=models.CumulativeLeaderboard, tags=["chain"],
             responses=ERRORS)
    async def leaderboard_cumulative(
        limit: Annotated[int, Query(ge=1, le=500)] = DEFAULT_PAGE,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> Response:
        if limit == DEFAULT_PAGE and offset == 0:
            return _json(state.bodies["leaderboard_cumulative"])
        return _json(state.cumulative_body(limit, offset))

    @app.get("/api/rewards-history", response_model=models.RewardsHistory, tags=["swarm"], responses=ERRORS)
    async def rewards_history(
        limit: Annotated[int, Query(ge=1, le=100, description="peers (top by reward in the window)")] = DEFAULT_SERIES,
        peer_id: Annotated[str | None, Query(max_length=128, pattern=PEER_ID_RE.pattern,
                                             description="also include this peer")] = None,
    ) -> Response:
        if limit == DEFAULT_SERIES and peer_id is None:
            return _json(state.bodies["rewards_history"])
        return _json(state.history_body(limit, peer_id))

    @app.get("/api/gossip", response_model=models.Gossip, tags=["swarm"], responses=ERRORS)
    async def gossip(limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_GOSSIP) -> Response:
        if limit == DEFAULT_GOSSIP:
            return _json(state.bodies["gossip"])
        return _json(state.gossip_body(limit))

    @app.get("/api/nodes", response_model=models.Nodes, tags=["swarm"])
    async def nodes() -> Response:
        return _json(state.bodies["nodes"])

    @app.get("/api/me", response_model=models.Me, tags=["swarm"], summary="The trainer on this machine")
    async def me() -> Response:
        return _json(state.bodies["me"])

    # ------------------------------------------------------------------ names

    @app.get("/api/name-to-id", response_model=models.NameToId, tags=["names"],
             responses={**ERRORS, 404: {"model": models.ErrorBody}})
    async def name_to_id(name: Annotated[str, Query(min_length=1, max_length=128,
                                                    description="a peer name, e.g. quick-amber-otter")]) -> Response:
        wanted = normalize_name(name)
        if not wanted:
            return _error(400, f"name {name!r} has no letters or digits; give a name like quick-amber-otter")
        ids = state.lookup_name(wanted)
        if not ids:
            return _error(404, f"no known peer is named {wanted!r} (peers seen: {len(state.peers)})")
        return _json(models.NameToId(name=wanted, peer_ids=ids).model_dump_json().encode())

    @app.post("/api/id-to-name", response_model=models.IdToName, tags=["names"], responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": {
                  "type": "array", "items": {"type": "string", "maxLength": 128},
                  "maxItems": cfg.id_to_name_max_ids,
                  "description": "peer IDs (base58); also accepted: {\"peer_ids\": [...]}"}}}}})
    async def id_to_name(request: Request) -> Response:
        raw = await _read_capped_body(request, cfg.id_to_name_max_bytes)
        if raw is None:
            return _error(413, f"body larger than {cfg.id_to_name_max_bytes} bytes; send at most "
                          f"{cfg.id_to_name_max_ids} peer IDs per request")
        try:
            data = json.loads(raw)
        except ValueError:
            return _error(400, "body must be JSON: a list of peer ID strings, e.g. [\"QmYyQSo1c1Ym...\"]")
        if isinstance(data, dict) and isinstance(data.get("peer_ids"), list):
            data = data["peer_ids"]
        if not isinstance(data, list):
            return _error(400, "body must be a JSON list of peer ID strings (or {\"peer_ids\": [...]})")
        if len(data) > cfg.id_to_name_max_ids:
            return _error(413, f"{len(data)} peer IDs in one request; the limit is {cfg.id_to_name_max_ids}")
        bad = [i for i, p in enumerate(data) if not isinstance(p, str) or not PEER_ID_RE.match(p)]
        if bad:
            return _error(400, f"items {bad[:5]} are not peer IDs (base58 strings of 1-128 characters)")
        names = {p: state.names.get(p) or peer_name(p) for p in data}
        return _json(models.IdToName(names=names).model_dump_json().encode())

    # ------------------------------------------------------------------ live updates

    @app.get("/api/events", tags=["live"], response_class=StreamingResponse,
             summary="Server-sent events: `update` with {version, round, stage} whenever the cache changes",
             responses={200: {"content": {"text/event-stream": {}}}, 429: {"model": models.ErrorBody},
                        503: {"model": models.ErrorBody}})
    async def events(request: Request) -> Response:
        ip = request.client.host if request.client else "unknown"
        refused = take_event_slot(ip)
        if refused is not None:
            return refused

        async def stream() -> AsyncIterator[bytes]:
            last = -1
            yield b"retry: 3000\n\n"
            while True:
                if state.version != last:
                    last = state.version
                    data = json.dumps({"version": last, "round": state.round, "stage": state.stage})
                    yield f"event: update\ndata: {data}\n\n".encode()
                try:
                    async with poller.changed:
                        await asyncio.wait_for(poller.changed.wait(), EVENTS_HEARTBEAT_S)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": ping\n\n"

        return _SlotStream(stream(), lambda: release_event_slot(ip), media_type="text/event-stream",
                           headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.api_route("/api/{rest:path}", methods=["GET"], include_in_schema=False)
    async def api_not_found(rest: str) -> JSONResponse:
        return _error(404, f"no API endpoint /api/{rest}; see /docs for the list")

    # ------------------------------------------------------------------ the UI

    dist = Path(cfg.ui_dist)

    def ui_file(rel: str) -> Path | None:
        root = dist.resolve()
        target = (root / rel).resolve()
        if target.is_file() and (target == root or root in target.parents):
            return target
        return None

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = ui_file("index.html")
        if page is None:
            return HTMLResponse(NOT_BUILT_HTML.format(dist=dist), status_code=503)
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/{rest:path}", include_in_schema=False)
    async def static(rest: str) -> Response:
        found = ui_file(rest)
        if found is not None:
            # Vite puts a content hash in asset names: those may be cached for good.
            cache = "public, max-age=31536000, immutable" if rest.startswith("assets/") else "no-cache"
            return FileResponse(found, headers={"Cache-Control": cache})
        return await index()

    return app


def __getattr__(name: str) -> Any:
    # `uvicorn api.server:app` looks the attribute up; build it then, not at import.
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
