"""`create_app(settings) -> FastAPI`: the login page, the JSON API and their guards.

Guards, outermost first: a catch-all that turns any crash into a plain 500 (no
traceback, so no request data, reaches the log), request logging, the Host allowlist
(421: a DNS-rebinding page arrives with its own host name), CORS (the dashboard's origins
only), body size limit (413), Origin check on unsafe methods, then per route: CSRF (forms: hidden field; JSON: X-CSRF-Token header), rate limits (sign-in per
client IP, writes per org), API-key auth for the trainer's writes.

Cookies are HttpOnly and SameSite=Strict; Secure when the request came over https (or
always/never by `cookie_secure`). Plain http on 127.0.0.1 is the local exception: a
browser will not send a Secure cookie over http, so local sign-in would be impossible.
"""

# No `from __future__ import annotations` here: FastAPI must resolve the Annotated
# dependency aliases defined inside create_app, which string annotations would hide.

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Form, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import schemas, security
from .accounts import LoginService, ServiceError
from .chainpool import ChainBusy
from .logs import event, redact
from .ratelimit import TokenBucket
from .relay import ChainUnavailable, ContractRejected, TxOutcome
from .settings import LoginSettings

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "rls_session"
ANON_COOKIE = "rls_anon"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

_E = schemas.ErrorResponse
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": _E, "description": "missing, unknown or revoked API key"},
    403: {"model": _E, "description": "the key belongs to another org, or the request came from a foreign origin"},
    404: {"model": _E, "description": "unknown orgId"},
    413: {"model": _E, "description": "request body too large"},
    429: {"model": _E, "description": "rate limited; see Retry-After"},
}
CHAIN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": _E, "description": "the contract rejected the call (InvalidRoundNumber, InvalidStageNumber, InvalidVoterPeerId, ...)"},
    409: {"model": _E, "description": "already done on chain (PeerIdAlreadyRegistered, RewardAlreadySubmitted, WinnerAlreadyVoted)"},
    503: {"model": _E, "description": "chain unreachable; retry after Retry-After seconds"},
}
SESSION_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": _E, "description": "not signed in"},
    403: {"model": _E, "description": "missing/wrong CSRF token or foreign origin"},
    413: {"model": _E, "description": "request body too large"},
}


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def host_name(host_header: str) -> str:
    """`Host` without its port, lower-cased: "[::1]:3000" -> "[::1]", "Localhost:3000" -> "localhost"."""
    h = host_header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[: end + 1] if end > 0 else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def validation_detail(exc: RequestValidationError) -> str:
    """Where and what, never the submitted value (it may be a password)."""
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts) or "the request did not validate"


class CatchAll:
    """Any exception becomes a JSON 500 here, logged by type only.

    Starlette re-raises after its own 500 handler so the server logs the traceback, and a
    traceback can quote request data (a password). Nothing escapes this wrapper.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            logging.getLogger("modal_login").error("unhandled %s on %s", type(exc).__name__, scope.get("path", "?"))
            if not started:
                await _error(500, "InternalError", f"{type(exc).__name__} in the login service; see its log")(scope, receive, send)


class BodyLimit:
    """413 for bodies over `limit` bytes: at once from Content-Length, else while streaming.

    Pure ASGI (not FastAPI's max_body_size) so the 413 goes through the app's error
    handler and carries the same JSON body as every other error.
    """

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = HTTPException(413, f"request body larger than {self.limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await _error(413, "PayloadTooLarge", str(too_large.detail))(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)


def create_app(settings: LoginSettings) -> FastAPI:
    svc = LoginService(settings)
    allowed_hosts = set(settings.allowed_hosts)
    signin_bucket = TokenBucket(settings.signin_per_minute / 60.0, settings.signin_burst)
    write_bucket = TokenBucket(settings.writes_per_second, settings.writes_burst)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    bearer = HTTPBearer(auto_error=False, description="the trainer's API key (activate it on the login page or with `rl-swarm login`)")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        from hivemind_exp.common.telemetry import setup_telemetry

        try:  # sign-ins, API calls and relayed transactions (README "Metrics"); optional
            setup_telemetry("modal-login", {"node_name": "login"})
        except Exception as exc:  # noqa: BLE001 - metrics are optional, the login service is not
            logging.getLogger("modal_login").warning("telemetry not started: %s", type(exc).__name__)
        svc.probe.ensure_started()
        yield
        svc.probe.stop()
        svc.chain.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="RL Swarm login service",
        version="1.0.0",
        description="Wallets, the trainer's API key, and the SwarmCoordinator relay.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.service = svc
    app.state.settings = settings
    from hivemind_exp.common.telemetry import Telemetry, instrument_fastapi

    instrument_fastapi(app, Telemetry.login_metrics, service_name="modal-login")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ------------------------------------------------------------------ helpers
    def client_ip(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def secure_cookies(request: Request) -> bool:
        if settings.cookie_secure == "always":
            return True
        if settings.cookie_secure == "never":
            return False
        return request.url.scheme == "https"

    def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=secure_cookies(request), path="/")

    def rate_limit(bucket: TokenBucket, key: str, what: str) -> None:
        wait = bucket.take(key)
        if wait > 0:
            retry = max(1, int(wait + 0.999))
            raise ServiceError(429, "RateLimited", f"too many {what}; retry in {retry} s", {"Retry-After": str(retry)})

    def anon_csrf(request: Request) -> tuple[str, str | None]:
        """(token for the form, new anon cookie value or None when the browser already has one)."""
        anon = request.cookies.get(ANON_COOKIE)
        fresh = None
        if not anon or len(anon) > 100:
            anon = fresh = security.new_token()
        return svc.csrf_token("anon:" + anon), fresh

    def check_anon_csrf(request: Request, token: str) -> None:
        anon = request.cookies.get(ANON_COOKIE)
        if not anon or not security.same(token, svc.csrf_token("anon:" + anon)):
            raise ServiceError(403, "CsrfFailed", "the form expired or came from another site: reload the page and try again")

    def session(request: Request) -> tuple[str, Any] | None:
        token = request.cookies.get(SESSION_COOKIE)
        user = svc.session_user(token)
        return (token, user) if user and token else None

    def require_session(request: Request, csrf: str | None) -> tuple[str, Any]:
        found = session(request)
        if not found:
            raise ServiceError(401, "NotSignedIn", "sign in first (the session may have expired)")
        if not security.same(csrf, svc.session_csrf(found[0])):
            raise ServiceError(403, "CsrfFailed", "missing or wrong CSRF token: reload the page (JSON clients: send X-CSRF-Token from the sign-in response)")
        return found

    # -------------------------------------------------------------- middleware
    # Added first = innermost: the endpoint reads the body through it in its own task, so
    # its 413 reaches the error handler (outside BaseHTTPMiddleware's task group).
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.middleware("http")
    async def guard_and_log(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        host = host_name(request.headers.get("host", ""))
        if host not in allowed_hosts:
            event("request", method=request.method, path=request.url.path, status=421, ip=client_ip(request), reason="host")
            return _error(421, "MisdirectedRequest",
                          "this service does not answer to that Host name; open it as http://127.0.0.1:<port>/ or "
                          "add the name to RLSWARM_LOGIN_ALLOWED_HOSTS")
        origin = request.headers.get("origin")
        if request.method in UNSAFE and origin and origin != "null":
            host = request.headers.get("host", "")
            if urlsplit(origin).netloc != host and origin not in settings.cors_origins:
                response: Response = _error(403, "ForeignOrigin", f"requests from {origin} are not allowed; use the login page itself")
                event("request", method=request.method, path=request.url.path, status=403, ip=client_ip(request))
                return response
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
        event("request", method=request.method, path=request.url.path, status=response.status_code,
              ms=round((time.perf_counter() - start) * 1000, 1), ip=client_ip(request))
        return response

    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "X-CSRF-Token"],
        max_age=600,
    )
    # Added last = outermost of the app's own middleware.
    app.add_middleware(CatchAll)

    # ---------------------------------------------------------- error handlers
    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError) -> Response:
        return _error(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Same body shape as every other error, so clients parse one thing.
        names = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 413:
            detail = f"request body larger than {settings.max_body_bytes} bytes"
        return _error(exc.status_code, names.get(exc.status_code, "HTTPError"), detail, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        return _error(422, "InvalidRequest", validation_detail(exc))

    @app.exception_handler(ChainUnavailable)
    async def on_chain_down(request: Request, exc: ChainUnavailable) -> Response:
        # The log gets the cause (URL reduced to scheme://host); the body names neither URL nor cause.
        event("chain_unavailable", logging.WARNING, path=request.url.path, detail=str(exc))
        svc.probe.poke()
        what = "the chain is slow: too many calls are waiting for it" if isinstance(exc, ChainBusy) else "the chain did not answer"
        return _error(503, "ChainUnavailable", f"{what}; retry in {settings.retry_after_s} s",
                      {"Retry-After": str(settings.retry_after_s)})

    @app.exception_handler(ContractRejected)
    async def on_rejected(request: Request, exc: ContractRejected) -> Response:
        event("contract_rejected", logging.INFO, path=request.url.path, error=exc.name, status=exc.status)
        headers = {"Retry-After": str(settings.retry_after_s)} if exc.status == 503 else None
        return _error(exc.status, exc.name, redact(exc.detail), headers)

    # ---------------------------------------------------------------- health
    async def health() -> Response:
        """From the background probe: no request ever waits on the chain (nor on a thread)."""
        svc.probe.ensure_started()
        deadline = time.monotonic() + 1.0
        while svc.probe.latest is None and time.monotonic() < deadline:  # only right after start
            await asyncio.sleep(0.05)
        latest = svc.probe.latest
        if latest is not None and not latest.storage_ok:
            return _error(503, "StorageUnavailable", "the login database cannot be read; see the service log",
                          {"Retry-After": str(settings.retry_after_s)})
        chain_id = latest.chain_id if latest else None
        body = schemas.HealthResponse(status="ok", chain="ok" if chain_id is not None else "down", chainId=chain_id)
        return JSONResponse(body.model_dump())

    health_responses: dict[int | str, dict[str, Any]] = {503: {"model": _E, "description": "the database cannot be read"}}
    app.get("/api/healthz", response_model=schemas.HealthResponse, responses=health_responses, tags=["health"])(health)
    app.get("/health", response_model=schemas.HealthResponse, responses=health_responses, tags=["health"])(health)

    # ------------------------------------------------------------------ page
    def render(request: Request, *, error: str | None = None, notice: str | None = None, status: int = 200,
               new_key: str | None = None, email: str | None = None) -> Response:
        found = session(request)
        # Never the RPC URL: a provider key inside it would be shown to every visitor.
        cid = svc.relay._chain_id
        chain_label = "not reached yet" if cid is None else ("local (31337)" if cid == 31337 else f"chain id {cid}")
        ctx: dict[str, Any] = {"error": error, "notice": notice, "chain_label": chain_label,
                               "min_password": settings.min_password_length}
        fresh_anon = None
        if found:
            token, user = found
            wallet = svc.ensure_wallet(user)
            ctx.update(user=user, address=wallet.address, funded=wallet.funded,
                       local_chain=svc.relay.is_local_chain_cached(), chain_known=svc.relay.chain_known(),
                       peer_ids=svc.peer_ids(user),
                       key_status=svc.storage.key_status(user.org_id), new_key=new_key, org_id=user.org_id,
                       is_owner=svc.is_owner(user), csrf_token=svc.session_csrf(token))
            name = "signed_in.html"
        else:
            ctx["csrf_token"], fresh_anon = anon_csrf(request)
            ctx["email"] = email
            name = "signed_out.html"
        response = templates.TemplateResponse(request, name, ctx, status_code=status,
                                              headers={"Cache-Control": "no-store"})
        if fresh_anon:
            set_cookie(response, request, ANON_COOKIE, fresh_anon, None)
        return response

    notices = {"welcome": "Account created: your wallet is ready.", "signed-in": "Signed in.",
               "revoked": "API key revoked: trainers using it are refused from now on."}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request, n: str = "") -> Response:
        return render(request, notice=notices.get(n))

    def signed_in_redirect(request: Request, signed: Any, notice: str) -> Response:
        response = RedirectResponse(f"/?n={notice}", status_code=303)
        set_cookie(response, request, SESSION_COOKIE, signed.session_token, settings.session_ttl_s)
        return response

    @app.post("/signup", include_in_schema=False)
    def page_signup(request: Request, email: Annotated[str, Form(max_length=254)] = "",
                    password: Annotated[str, Form(max_length=1024)] = "",
                    csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
        try:
            check_anon_csrf(request, csrf_token)
            rate_limit(signin_bucket, client_ip(request), "sign-in attempts")
            signed = svc.start_session(svc.sign_up(email, password))
        except ServiceError as e:
            return render(request, error=e.detail, status=e.status, email=email)
        return signed_in_redirect(request, signed, "welcome")

    @app.post("/signin", include_in_schema=False)
    def page_signin(request: Request, email: Annotated[str, Form(max_length=254)] = "",
                    password: Annotated[str, Form(max_length=1024)] = "",
                    csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
        try:
            check_anon_csrf(request, csrf_token)
            rate_limit(signin_bucket, client_ip(request), "sign-in attempts")
            signed = svc.sign_in(email, password)
        except ServiceError as e:
            return render(request, error=e.detail, status=e.status, email=email)
        return signed_in_redirect(request, signed, "signed-in")

    @app.post("/signout", include_in_schema=False)
    def page_signout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
        try:
            token, _ = require_session(request, csrf_token)
        except ServiceError as e:
            return render(request, error=e.detail, status=e.status)
        svc.sign_out(token)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies(request))
        return response

    @app.post("/key/activate", include_in_schema=False)
    def page_activate(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
        try:
            _, user = require_session(request, csrf_token)
        except ServiceError as e:
            return render(request, error=e.detail, status=e.status)
        key = svc.activate_key(user)
        # Rendered directly (not a redirect) so the key appears exactly once.
        return render(request, notice="API key activated: the trainer can start now.", new_key=key)

    @app.post("/key/revoke", include_in_schema=False)
    def page_revoke(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
        try:
            _, user = require_session(request, csrf_token)
        except ServiceError as e:
            return render(request, error=e.detail, status=e.status)
        svc.revoke_key(user)
        return RedirectResponse("/?n=revoked", status_code=303)

    # ------------------------------------------------------- JSON: session API
    def session_response(request: Request, signed: Any) -> JSONResponse:
        body = schemas.SessionResponse(user=schemas.UserDataModel(**svc.user_data(signed.user, signed.wallet)),
                                       csrfToken=svc.session_csrf(signed.session_token), funded=signed.funded)
        response = JSONResponse(body.model_dump())
        set_cookie(response, request, SESSION_COOKIE, signed.session_token, settings.session_ttl_s)
        return response

    signin_errors: dict[int | str, dict[str, Any]] = {
        400: {"model": _E}, 401: {"model": _E}, 403: {"model": _E}, 409: {"model": _E}, 413: {"model": _E},
        429: {"model": _E, "description": "too many attempts from this IP; see Retry-After"}}

    @app.post("/api/auth/signup", response_model=schemas.SessionResponse, responses=signin_errors, tags=["account"])
    def api_signup(body: schemas.SignUpRequest, request: Request) -> JSONResponse:
        """Create an account and sign in (creates the wallet, writes userData.json)."""
        rate_limit(signin_bucket, client_ip(request), "sign-in attempts")
        return session_response(request, svc.start_session(svc.sign_up(body.email, body.password)))

    @app.post("/api/auth/signin", response_model=schemas.SessionResponse, responses=signin_errors, tags=["account"])
    def api_signin(body: schemas.AuthRequest, request: Request) -> JSONResponse:
        """Sign in; the session cookie and the returned csrfToken authorize /api/auth/* writes."""
        rate_limit(signin_bucket, client_ip(request), "sign-in attempts")
        return session_response(request, svc.sign_in(body.email, body.password))

    CsrfHeader = Annotated[str | None, Header(alias="X-CSRF-Token", max_length=200,
                                              description="csrfToken from the sign-in/sign-up response")]

    @app.get("/api/auth/me", response_model=schemas.MeResponse, responses={401: {"model": _E}}, tags=["account"])
    def api_me(request: Request) -> schemas.MeResponse:
        found = session(request)
        if not found:
            raise ServiceError(401, "NotSignedIn", "sign in first")
        user = found[1]
        wallet = svc.ensure_wallet(user)
        return schemas.MeResponse(user=schemas.UserDataModel(**svc.user_data(user, wallet)),
                                  keyStatus=svc.storage.key_status(user.org_id), peerIds=svc.peer_ids(user))

    @app.post("/api/auth/activate-key", response_model=schemas.ActivateKeyResponse, responses=SESSION_ERRORS, tags=["account"])
    def api_activate(request: Request, csrf: CsrfHeader = None) -> schemas.ActivateKeyResponse:
        """Issue a new API key for the signed-in user's org (an older key stops working)."""
        _, user = require_session(request, csrf)
        key = svc.activate_key(user)
        return schemas.ActivateKeyResponse(orgId=user.org_id, apiKey=key, status="activated")

    @app.post("/api/auth/revoke-key", response_model=schemas.RevokeKeyResponse, responses=SESSION_ERRORS, tags=["account"])
    def api_revoke(request: Request, csrf: CsrfHeader = None) -> schemas.RevokeKeyResponse:
        _, user = require_session(request, csrf)
        svc.revoke_key(user)
        return schemas.RevokeKeyResponse(orgId=user.org_id, status="revoked")

    @app.post("/api/auth/signout", status_code=204, responses=SESSION_ERRORS, tags=["account"])
    def api_signout(request: Request, csrf: CsrfHeader = None) -> Response:
        token, _ = require_session(request, csrf)
        svc.sign_out(token)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies(request))
        return response

    # -------------------------------------------------------- JSON: trainer API
    @app.get("/api/get-api-key-status", response_model=schemas.KeyStatusResponse, tags=["trainer"])
    def api_key_status(orgId: Annotated[str, Query(min_length=1, max_length=128)]) -> schemas.KeyStatusResponse:
        """`activated` once the user activated the trainer's key; `pending` before (and for an orgId nobody has); `revoked` after a revoke."""
        return schemas.KeyStatusResponse(orgId=orgId, status=svc.key_status(orgId))

    def key_org(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        return svc.org_for_key(creds.credentials if creds else None)

    KeyOrg = Annotated[str, Depends(key_org)]
    write_responses = {**AUTH_ERRORS, **CHAIN_ERRORS}

    def writer(org: str, body_org: str) -> Any:
        user = svc.user_for_write(org, body_org)
        rate_limit(write_bucket, org, "write calls for this org")
        return user

    @app.get("/api/wallet-address", response_model=schemas.WalletAddressResponse, tags=["trainer"],
             responses={**AUTH_ERRORS, 409: {"model": _E, "description": "the account has no wallet yet"}})
    def wallet_address(orgId: Annotated[str, Query(min_length=1, max_length=128)],
                       org: KeyOrg) -> schemas.WalletAddressResponse:
        """The user's wallet address: the trainer's peer key signs its registration proof for it."""
        user = svc.user_for_write(org, orgId)
        wallet = svc.storage.wallet(user.id)
        if wallet is None:
            raise ServiceError(409, "NoWallet", "this account has no wallet yet: sign in once on the login page")
        return schemas.WalletAddressResponse(orgId=orgId, address=wallet.address)

    async def relay_write(org: str, body_org: str, send: Any) -> TxOutcome:
        """Checks and the key unlock on the request threads; the send and receipt wait on the chain pool."""
        def prepare() -> Any:
            return svc.unlock(writer(org, body_org))

        account = await run_in_threadpool(prepare)
        return await svc.chain.run(send, account)

    @app.post("/api/register-peer", response_model=schemas.TxResponse, responses=write_responses, tags=["trainer"])
    async def register_peer(body: schemas.RegisterPeerRequest, org: KeyOrg) -> schemas.TxResponse:
        """Bind `peerId` to the user's wallet with the trainer's key proof (409 PeerIdAlreadyRegistered if done;
        400 InvalidPeerProof if the proof is not for this wallet, chain and contract)."""
        public_key, signature = bytes.fromhex(body.publicKey[2:]), bytes.fromhex(body.signature[2:])
        tx = await relay_write(org, body.orgId,
                               lambda account: svc.relay.register_peer(account, body.peerId, public_key, signature))
        event("relay", op="register_peer", org_id=org, peer_id=body.peerId, tx_hash=tx.tx_hash)
        return schemas.TxResponse(txHash=tx.tx_hash, blockNumber=tx.block_number)

    @app.post("/api/submit-reward", response_model=schemas.TxResponse, responses=write_responses, tags=["trainer"])
    async def submit_reward(body: schemas.SubmitRewardRequest, org: KeyOrg) -> schemas.TxResponse:
        """Record a stage reward (409 RewardAlreadySubmitted on a replay; 400 InvalidRoundNumber/InvalidStageNumber)."""
        tx = await relay_write(org, body.orgId, lambda account: svc.relay.submit_reward(
            account, body.roundNumber, body.stageNumber, body.reward, body.peerId))
        event("relay", op="submit_reward", org_id=org, peer_id=body.peerId, round=body.roundNumber,
              stage=body.stageNumber, tx_hash=tx.tx_hash)
        return schemas.TxResponse(txHash=tx.tx_hash, blockNumber=tx.block_number)

    @app.post("/api/submit-winner", response_model=schemas.TxResponse, responses=write_responses, tags=["trainer"])
    async def submit_winner(body: schemas.SubmitWinnerRequest, org: KeyOrg) -> schemas.TxResponse:
        """Vote for the round's winners (409 WinnerAlreadyVoted on a replay)."""
        tx = await relay_write(org, body.orgId, lambda account: svc.relay.submit_winners(
            account, body.roundNumber, list(body.winners), body.peerId))
        event("relay", op="submit_winner", org_id=org, peer_id=body.peerId, round=body.roundNumber, tx_hash=tx.tx_hash)
        return schemas.TxResponse(txHash=tx.tx_hash, blockNumber=tx.block_number)

    def openapi() -> dict[str, Any]:
        # Our 422 body is {error, detail: str} (no echo of the input), not FastAPI's list of errors.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            ref = {"$ref": "#/components/schemas/ErrorResponse"}
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    if "422" in op.get("responses", {}):
                        op["responses"]["422"] = {"description": "the request did not validate; `detail` names the field",
                                                  "content": {"application/json": {"schema": ref}}}
            comps = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                comps.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
