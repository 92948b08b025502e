"""The web console's routes: one Starlette app, mounted at /console on the admin port
(bridge/frontends/http/asgi.py `build_app(mounts=...)`).

Pages are server-rendered Jinja2 templates (templates/) with one small script and one style
sheet (static/), all served from here: no CDN, no web fonts, nothing fetched from outside, so
the console works at a site without internet. The overview's numbers refresh every few seconds
by fetching an HTML fragment (/console/live) that the script swaps in.

Reads go through the same parts the admin API uses (the /api/status document, the store's
lookups); changes (pause, resume, drain, cancel, opt-outs) call the same methods its routes do.
Login, sessions and CSRF: auth.py. Every answer carries a Content-Security-Policy that allows
only this origin's script and style, and no framing.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import jinja2
import trio
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ... import __version__
from ...admin import LOOPBACK_HOSTS, NUMBER_RE, drain, message_document
from ...lifecycle import FINAL
from . import views
from .auth import COOKIE, IDLE_SECONDS, Login, Session, Sessions, TooManyAttempts, csrf_ok

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PREFIX = "/console"
MAX_FORM_BYTES = 16 * 1024
CONSOLE_DRAIN_SECONDS = 30.0
LIVE_SECONDS = 5  # how often the overview refreshes its numbers
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
     b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
ERROR_500 = (b"<!doctype html><title>Error</title><h1>Something went wrong</h1>"
             b"<p>The bridge's log has the details (console: ... failed).</p>")
# What a redirect after a change tells the page to say (codes, so a link cannot put words there).
NOTICES = {
    "paused": "Channel paused: a message in progress is finished first; it takes no new ones.",
    "resumed": "Channel resumed: it takes messages again.",
    "drained": "Channel drained: paused, and nothing is in progress on it.",
    "draining": "Channel paused, but a message was still in progress after 30 s; it finishes on its own.",
    "cancelled": "Message cancelled: it will not be sent.",
    "not-cancelled": "That message could not be cancelled: only a message still waiting can be.",
    "optout-added": "Number added to the opt-out list: nothing more is sent to it.",
    "optout-listed": "That number was already on the opt-out list.",
    "optout-removed": "Number removed from the opt-out list.",
    "optout-missing": "That number was not on the opt-out list.",
    "bad-number": "That is not a phone number: write it like +4917012345678.",
    "no-message": "No message with that id or number.",
}
CHANNEL_ACTIONS = ("pause", "resume", "drain")


@attrs.frozen
class ConsoleParts:
    """What the console may touch; bridge/app.py wires it once."""

    admin: Any  # AdminConfig at start: token, console_password_hash, read-only, tls
    config: Callable[[], Any]  # the config in force
    status: Callable[[], Awaitable[dict[str, Any]]]  # the /api/status document
    store: Any
    channels: Callable[[], Mapping[str, Any] | None]
    last_reload: Callable[[], dict[str, Any] | None]
    #: Counts a login attempt by result ("ok", "wrong", "throttled"): smpp_bridge_console_logins_total.
    on_login: Callable[[str], None] = lambda result: None


class _Headers:
    """ASGI wrapper: the security headers on every console answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_with(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, send_with)
        except Exception:
            # A bug in a page: the log gets the traceback, the browser a page that says so
            # (Starlette's own error middleware may have answered already).
            log.exception("console: %s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await send_with({"type": "http.response.start", "status": 500,
                                 "headers": [(b"content-type", b"text/html; charset=utf-8")]})
                await send_with({"type": "http.response.body", "body": ERROR_500})


class Redirect(Exception):
    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.to = to


class Console:
    def __init__(self, parts: ConsoleParts) -> None:
        self.parts = parts
        admin = parts.admin
        self.secure_cookie = admin.tls is not None
        self.read_only_public = admin.console_read_only_public
        self.login = Login(admin.token.reveal() if admin.token is not None else None, admin.console_password_hash)
        self.sessions = Sessions(trio.current_time)
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                 autoescape=True, undefined=jinja2.StrictUndefined)
        env.filters.update(age=views.age, size=views.size, when=views.when, left=views.left,
                           q=lambda s: urllib.parse.quote(str(s), safe=""))
        self.env = env

    # -- the app --------------------------------------------------------------------------------

    def mount(self) -> Mount:
        return Mount(PREFIX, app=_Headers(self.app()), name="console")

    def app(self) -> Starlette:
        r = Route
        return Starlette(routes=[
            r("/", self.page_overview),
            r("/live", self.fragment_live),
            r("/login", self.page_login, methods=["GET", "POST"]),
            r("/logout", self.do_logout, methods=["POST"]),
            r("/channels", self.page_channels),
            r("/channels/{key}/{action}", self.channel_action, methods=["GET", "POST"]),
            r("/messages", self.page_messages),
            r("/messages/{message_id}", self.page_message),
            r("/messages/{message_id}/cancel", self.cancel_message, methods=["POST"]),
            r("/inbound", self.page_inbound),
            r("/optouts", self.page_optouts, methods=["GET", "POST"]),
            r("/connectors", self.page_connectors),
            r("/config", self.page_config),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ], exception_handlers={Redirect: self._redirect, _Refused: self._refused, 404: self._not_found})

    async def _redirect(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Redirect)
        return RedirectResponse(exc.to, status_code=303)

    async def _refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Refused)
        return self.render(request, "error.html", self._session(request), status=exc.status,
                           title="Refused" if exc.status == 403 else "Not found", message=exc.message)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self.render(request, "error.html", None, status=404, title="Not found",
                           message=f"There is no console page at {request.url.path}.")

    # -- helpers --------------------------------------------------------------------------------

    def render(self, request: Request, name: str, session: Session | None, *, status: int = 200,
               **ctx: Any) -> HTMLResponse:
        notice = NOTICES.get(request.query_params.get("done", ""))
        html = self.env.get_template(name).render(
            prefix=PREFIX, session=session, csrf=session.csrf if session else "", notice=notice,
            version=__version__, live_seconds=LIVE_SECONDS, path=request.url.path, **ctx)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def _session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def viewer(self, request: Request) -> Session | None:
        """The session, or None for a public read-only view; otherwise off to the login page."""
        session = self._session(request)
        if session is None and not self.read_only_public:
            back = urllib.parse.quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
            raise Redirect(f"{PREFIX}/login?next={back}")
        return session

    async def change(self, request: Request) -> tuple[Session, dict[str, str]]:
        """A change: needs a session, a same-site Origin (when sent) and the session's CSRF token."""
        session = self._session(request)
        if session is None:
            raise Redirect(f"{PREFIX}/login")
        self._same_origin(request)
        form = await self.form(request)
        if not csrf_ok(session, form.get("csrf")):
            raise _Refused("The form was stale or forged (its CSRF token did not match): reload the page and try again.")
        return session, form

    def _same_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            raise _Refused("This came from a page of another site, so it was refused.")

    async def form(self, request: Request) -> dict[str, str]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise _Refused("The form is too large.")
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise _Refused("The form is not UTF-8.") from None
        return dict(pairs)

    def _loopback(self, request: Request) -> bool:
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.lower() in LOOPBACK_HOSTS

    # -- login ----------------------------------------------------------------------------------

    async def page_login(self, request: Request) -> Response:
        nxt = request.query_params.get("next", "")
        if not nxt.startswith(PREFIX + "/") or nxt.startswith("//"):
            nxt = PREFIX + "/"
        ctx = {"next": nxt, "configured": self.login.configured, "error": None, "title": "Log in"}
        if request.method == "GET":
            return self.render(request, "login.html", self._session(request), **ctx)
        self._same_origin(request)  # no logging a browser in from another site's page
        form = await self.form(request)
        client = request.client
        ip = client.host if client is not None else ""
        status = 401
        try:
            if self.login.configured:
                who = await self.login.check(ip, form.get("secret", ""))
            else:
                who = "loopback" if self._loopback(request) else None
        except TooManyAttempts as exc:
            self.parts.on_login("throttled")
            log.warning("console: login from %s refused, too many failed attempts", ip)
            resp = self.render(request, "login.html", None, status=429, **{
                **ctx, "error": f"Too many failed logins from {ip}. Wait {exc.retry_after:.0f} seconds, then try "
                                "again with the right token or password."})
            resp.headers["Retry-After"] = str(int(exc.retry_after))
            return resp
        if who is None:
            self.parts.on_login("wrong")
            log.warning("console: failed login from %s", ip)
            error = ("Wrong token or password. Use the admin token (admin.token) or the console password "
                     "(admin.console_password_hash)." if self.login.configured else
                     "Without admin.token or a console password the console opens only on 127.0.0.1 or localhost.")
            return self.render(request, "login.html", None, status=status if self.login.configured else 403,
                               **{**ctx, "error": error})
        self.parts.on_login("ok")
        self.sessions.drop(request.cookies.get(COOKIE))
        cookie, _session = self.sessions.new(who)
        log.info("console: login from %s with the %s", ip, "admin token" if who == "token" else
                 "console password" if who == "password" else "loopback rule (no credentials configured)")
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, cookie, max_age=int(IDLE_SECONDS), path=PREFIX, httponly=True,
                        samesite="strict", secure=self.secure_cookie)
        return resp

    async def do_logout(self, request: Request) -> Response:
        await self.change(request)
        self.sessions.drop(request.cookies.get(COOKIE))
        resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
        resp.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=self.secure_cookie)
        return resp

    # -- overview -------------------------------------------------------------------------------

    async def page_overview(self, request: Request) -> Response:
        session = self.viewer(request)
        status = await self.parts.status()
        return self.render(request, "overview.html", session, title="Overview", st=status,
                           tally=views.overview(status))

    async def fragment_live(self, request: Request) -> Response:
        session = self._session(request)
        if session is None and not self.read_only_public:
            return HTMLResponse("", status_code=401, headers={"Cache-Control": "no-store"})
        status = await self.parts.status()
        return self.render(request, "_live.html", session, st=status, tally=views.overview(status))

    # -- channels -------------------------------------------------------------------------------

    async def page_channels(self, request: Request) -> Response:
        session = self.viewer(request)
        status = await self.parts.status()
        return self.render(request, "channels.html", session, title="Channels", st=status,
                           running=self.parts.channels() is not None)

    def _channel(self, key: str) -> Any:
        channels = self.parts.channels() or {}
        ch = channels.get(key)
        if ch is None:
            raise _Refused(f"There is no running channel {key!r}.", status=404)
        return ch

    async def channel_action(self, request: Request) -> Response:
        key, action = request.path_params["key"], request.path_params["action"]
        if action not in CHANNEL_ACTIONS:
            raise _Refused(f"Unknown action {action!r}: pause, resume or drain.", status=404)
        if request.method == "GET":  # the confirmation page
            session = self.viewer(request)
            ch = self._channel(key)
            return self.render(request, "confirm.html", session, title=f"{action.capitalize()} {key}?",
                               key=key, action=action, state=ch.state, paused=ch.paused)
        await self.change(request)
        ch = self._channel(key)
        if action == "pause":
            ch.pause()
            done = "paused"
        elif action == "resume":
            ch.resume()
            done = "resumed"
        else:
            done = "drained" if await drain(ch, CONSOLE_DRAIN_SECONDS) else "draining"
        log.info("channel %s %s through the web console", key, done)
        raise Redirect(f"{PREFIX}/channels?done={done}")

    # -- messages -------------------------------------------------------------------------------

    async def page_messages(self, request: Request) -> Response:
        session = self.viewer(request)
        q = request.query_params.get("q", "").strip()
        found: list[Any] = []
        searched = bool(q)
        if q.startswith(" "):
            q = "+" + q.lstrip()
        if q:
            rec = await self.parts.store.get(q)
            if rec is not None:
                raise Redirect(f"{PREFIX}/messages/{urllib.parse.quote(rec.message_id, safe='')}")
            if NUMBER_RE.match(q):
                found = await self.parts.store.find_by_number(q, 50)
        return self.render(request, "messages.html", session, title="Messages", q=q, searched=searched,
                           found=found)

    async def page_message(self, request: Request) -> Response:
        session = self.viewer(request)
        mid = request.path_params["message_id"]
        rec = await self.parts.store.get(mid)
        if rec is None:
            raise _Refused(f"No message with id {mid!r}.", status=404)
        doc = await message_document(self.parts.store, rec)
        return self.render(request, "message.html", session, title=f"Message {rec.message_id}", doc=doc,
                           cancellable=rec.state not in FINAL and rec.state.value not in ("sent", "submitting"))

    async def cancel_message(self, request: Request) -> Response:
        await self.change(request)
        mid = request.path_params["message_id"]
        rec = await self.parts.store.get(mid)
        if rec is None:
            raise _Refused(f"No message with id {mid!r}.", status=404)
        try:
            n = await self.parts.store.cancel(rec.esme, message_id=rec.message_id)
        except KeyError:
            n = 0
        if n:
            log.info("message %s cancelled through the web console", rec.message_id)
        raise Redirect(f"{PREFIX}/messages/{urllib.parse.quote(rec.message_id, safe='')}"
                       f"?done={'cancelled' if n else 'not-cancelled'}")

    # -- inbound, opt-outs, connectors, config ---------------------------------------------------

    async def page_inbound(self, request: Request) -> Response:
        session = self.viewer(request)
        sim = request.query_params.get("sim", "") or None
        status = await self.parts.status()
        sims = [c["key"] for d in status.get("devices", []) for c in d.get("channels", [])]
        rows = await self.parts.store.read(lambda conn: views.latest_inbound(conn, sim))
        return self.render(request, "inbound.html", session, title="Inbound SMS", rows=rows, sim=sim, sims=sims)

    async def page_optouts(self, request: Request) -> Response:
        if request.method == "POST":
            _session, form = await self.change(request)
            number = form.get("number", "").strip()
            if not NUMBER_RE.match(number):
                raise Redirect(f"{PREFIX}/optouts?done=bad-number")
            if form.get("remove"):
                removed = await self.parts.store.remove_optout(number)
                if removed:
                    log.info("opt-out removed through the web console")
                raise Redirect(f"{PREFIX}/optouts?done={'optout-removed' if removed else 'optout-missing'}")
            added = await self.parts.store.add_optout(number, source="console")
            log.info("opt-out added through the web console" if added else "opt-out already listed")
            raise Redirect(f"{PREFIX}/optouts?done={'optout-added' if added else 'optout-listed'}")
        session = self.viewer(request)
        rows = await self.parts.store.list_optouts()
        return self.render(request, "optouts.html", session, title="Opt-outs", rows=rows)

    async def page_connectors(self, request: Request) -> Response:
        session = self.viewer(request)
        status = await self.parts.status()
        return self.render(request, "connectors.html", session, title="Connectors",
                           connectors=status.get("connectors"))

    async def page_config(self, request: Request) -> Response:
        session = self.viewer(request)
        text = yaml.safe_dump(views.masked(self.parts.config()), sort_keys=False, allow_unicode=True)
        return self.render(request, "config.html", session, title="Config", text=text,
                           reload=self.parts.last_reload())


class _Refused(Exception):
    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
