"""The web console's login, sessions, CSRF, rate limit and masking, through the real ASGI app
(the admin port's assembly with the console mounted) and a real store, on trio's mock clock."""

from __future__ import annotations

import re

import attrs
import httpx
import pytest
import trio

from bridge.config.loader import load_config_text
from bridge.config.model import TlsConfig
from bridge.frontends.console.routes import Console, ConsoleParts
from bridge.frontends.console.views import MASK
from bridge.frontends.http.asgi import build_app
from bridge.passwords import hash_console_password
from bridge.store import Store

TOKEN = "console-unit-test-token-0123456789"
PASSWORD = "correct horse battery"
SECRETS = {
    "esme password": "esmepw1",
    "api key": "alice-api-key-0123456789",
    "webhook secret": "hook-secret-0123456789",
    "device password": "goip-admin-pw",
}


def config_text(*, read_only_public: bool = False, password_hash: str | None = None) -> str:
    extra = f"\n  console_password_hash: '{password_hash}'" if password_hash else ""
    return f"""
smpp:
  listeners: [{{host: 127.0.0.1, port: 0}}]
store:
  path: data/bridge.sqlite3
admin:
  host: 127.0.0.1
  port: 8025
  token: {TOKEN}
  console_read_only_public: {str(read_only_public).lower()}{extra}
esmes:
  - system_id: alice
    password: {SECRETS["esme password"]}
    api_key: {SECRETS["api key"]}
    webhook_secret: {SECRETS["webhook secret"]}
    receipt_url: https://example.com/hook?sig=abc
devices:
  - name: goip1
    kind: goip_http
    url: http://192.0.2.7/
    username: admin
    password: {SECRETS["device password"]}
    lines: 1
"""


@pytest.fixture
async def store(tmp_path, nursery):
    s = Store(tmp_path / "b.sqlite3")
    s.open()
    await nursery.start(s.run)
    yield s
    s.close()


def console_client(store, tmp_path, *, tls: bool = False, status=None, logins=None, **kw) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    config = load_config_text(config_text(**kw), base_dir=tmp_path)
    admin = attrs.evolve(config.admin, tls=TlsConfig(tmp_path / "c.pem", tmp_path / "k.pem")) if tls else config.admin

    async def no_status() -> dict:
        raise AssertionError("these pages do not read the status")

    console = Console(ConsoleParts(admin=admin, config=lambda: config, status=status or no_status, store=store,
                                   channels=lambda: None, last_reload=lambda: None,
                                   on_login=(logins.append if logins is not None else lambda r: None)))
    app = build_app([], mounts=[console.mount()])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8025")


async def login(c: httpx.AsyncClient, secret: str = TOKEN) -> httpx.Response:
    return await c.post("/console/login", data={"secret": secret})


def csrf_of(page: httpx.Response) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, "the page has no CSRF field"
    return m.group(1)


async def test_every_page_needs_a_login(store, tmp_path):
    async with console_client(store, tmp_path) as c:
        for path in ("/console/", "/console/channels", "/console/messages", "/console/inbound",
                     "/console/optouts", "/console/connectors", "/console/config"):
            r = await c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next="), path
        assert (await c.get("/console/live")).status_code == 401
        r = await c.post("/console/optouts", data={"number": "+4917000000001"})
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        assert await store.list_optouts() == []


async def test_login_with_the_token_sets_a_strict_httponly_cookie(store, tmp_path):
    async with console_client(store, tmp_path) as c:
        r = await c.post("/console/login?next=/console/config", data={"secret": TOKEN})
        assert r.status_code == 303 and r.headers["location"] == "/console/config"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        assert (await c.get("/console/config")).status_code == 200
        # A login form posted from another site's page is refused.
        r = await c.post("/console/login", data={"secret": TOKEN}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        # An open redirect is not possible through ?next=.
        r = await c.post("/console/login?next=https://evil.example/", data={"secret": TOKEN})
        assert r.headers["location"] == "/console/"


async def test_cookie_is_secure_when_the_admin_port_speaks_tls(store, tmp_path):
    async with console_client(store, tmp_path, tls=True) as c:
        assert "Secure" in (await login(c)).headers["set-cookie"]


async def test_login_with_the_console_password(store, tmp_path):
    pw_hash = hash_console_password(PASSWORD, iterations=1000)
    async with console_client(store, tmp_path, password_hash=pw_hash) as c:
        r = await login(c, "wrong password!")
        assert r.status_code == 401 and "set-cookie" not in r.headers
        assert "Wrong token or password" in r.text
        r = await login(c, PASSWORD)
        assert r.status_code == 303 and "bridge_console=" in r.headers["set-cookie"]


async def test_a_change_without_the_csrf_token_is_refused(store, tmp_path):
    async with console_client(store, tmp_path) as c:
        await login(c)
        page = await c.get("/console/optouts")
        token = csrf_of(page)
        r = await c.post("/console/optouts", data={"number": "+4917000000001"})
        assert r.status_code == 403 and "CSRF" in r.text
        r = await c.post("/console/optouts", data={"number": "+4917000000001", "csrf": ("y" if token[0] == "x" else "x") + token[1:]})
        assert r.status_code == 403
        r = await c.post("/console/optouts", data={"number": "+4917000000001", "csrf": token},
                         headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "another site" in r.text
        assert await store.list_optouts() == []
        r = await c.post("/console/optouts", data={"number": "+4917000000001", "csrf": token})
        assert r.status_code == 303 and r.headers["location"].endswith("done=optout-added")
        assert [o["number"] for o in await store.list_optouts()] == ["+4917000000001"]
        r = await c.post("/console/optouts", data={"number": "+4917000000001", "csrf": token, "remove": "1"})
        assert r.status_code == 303 and await store.list_optouts() == []
        r = await c.post("/console/optouts", data={"number": "+4917000000001", "csrf": token, "remove": "1"})
        assert r.headers["location"].endswith("done=optout-missing")
        assert "was not on the opt-out list" in (await c.get(r.headers["location"])).text
        # Logging out ends the session: its cookie and CSRF token no longer change anything.
        assert (await c.post("/console/logout", data={"csrf": token})).status_code == 303
        r = await c.post("/console/optouts", data={"number": "+4917000000002", "csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        assert await store.list_optouts() == []


async def test_failed_logins_are_slowed_then_refused(store, tmp_path, autojump_clock):
    logins: list[str] = []
    async with console_client(store, tmp_path, logins=logins) as c:
        for _ in range(5):
            assert (await login(c, "nope")).status_code == 401
        # Now each attempt waits its turn (2 s apart); one whose turn is over 10 s away gets 429
        # at once, unchecked.
        answers: list[httpx.Response] = []

        async def attempt(secret: str) -> None:
            answers.append(await login(c, secret))

        start = trio.current_time()
        async with trio.open_nursery() as n:
            for _ in range(8):
                n.start_soon(attempt, "nope")
        refused = [r for r in answers if r.status_code == 429]
        assert refused and all(r.headers["retry-after"] == "10" for r in refused)
        assert "Too many failed logins" in refused[0].text
        assert trio.current_time() - start >= 2.0  # the others waited their turns
        # The right token still gets in, after waiting its turn like any attempt from there.
        t0 = trio.current_time()
        assert (await login(c, TOKEN)).status_code == 303
        assert trio.current_time() - t0 >= 2.0
        await trio.sleep(61)  # the failures leave the one-minute window: no more waiting
        t0 = trio.current_time()
        assert (await login(c, "nope")).status_code == 401
        assert trio.current_time() - t0 < 1.0
    # Each attempt counted (smpp_bridge_console_logins_total{result}).
    assert logins.count("throttled") == len(refused) and logins.count("ok") == 1
    assert logins.count("wrong") == 5 + (8 - len(refused)) + 1


async def test_the_config_page_hides_every_secret(store, tmp_path):
    pw_hash = hash_console_password(PASSWORD, iterations=1000)
    async with console_client(store, tmp_path, password_hash=pw_hash) as c:
        await login(c)
        page = (await c.get("/console/config")).text
        for what, value in {**SECRETS, "token": TOKEN, "console hash": pw_hash.split("$")[3]}.items():
            assert value not in page, f"the {what} is shown"
        assert "sig=abc" not in page  # a URL's query may carry a key
        assert MASK in page and "goip1" in page and "alice" in page


async def test_read_only_without_login_only_when_configured(store, tmp_path):
    async with console_client(store, tmp_path, read_only_public=True) as c:
        r = await c.get("/console/optouts")
        assert r.status_code == 200 and 'name="csrf"' not in r.text and "Log in" in r.text
        r = await c.post("/console/optouts", data={"number": "+4917000000001", "csrf": ""})
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        assert await store.list_optouts() == []


async def test_pages_forbid_framing_and_foreign_scripts(store, tmp_path):
    async with console_client(store, tmp_path) as c:
        r = await c.get("/console/login")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
        js = await c.get("/console/static/console.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert "http" not in re.sub(r"//.*", "", js.text)  # loads nothing from elsewhere


async def test_connectors_page_shows_each_connectors_binds_and_counts(store, tmp_path):
    # The shape of /api/status's "connectors" section (bridge/connectors/metrics.py status()).
    doc = {"connectors": {"upstream": {
        "binds": {"tx1": {"state": "bound", "detail": ""}, "rx1": {"state": "backoff", "detail": "auth refused"}},
        "binds_up": 1, "submits": {"ESME_ROK": 41, "ESME_RTHROTTLED": 2}, "receipts": {"matched": 40},
        "bind_refusals": {"auth": 3}, "throttled": 2, "mo": 5, "mo_waiting": 0, "latency_avg_seconds": 0.0421}}}

    async def status() -> dict:
        return doc

    async with console_client(store, tmp_path, status=status) as c:
        await login(c)
        page = (await c.get("/console/connectors")).text
        row = page[page.index('data-connector="upstream"'):]
        row = row[:row.index("</tr>")]
        for shown in ("1 up", "tx1", "bound", "rx1", "backoff", "auth refused", "ESME_ROK 41", "matched 40", "42 ms"):
            assert shown in row, shown
        doc["connectors"] = {}
        assert "no connectors" in (await c.get("/console/connectors")).text


async def test_config_page_shows_a_refused_reload_with_its_errors(store, tmp_path):
    config = load_config_text(config_text(), base_dir=tmp_path)
    refused = {"at": 1_700_000_000.0, "ok": False, "errors": ["bridge.yaml:3: esmes[0].password: is empty"],
               "hint": "The bridge keeps running on its previous config."}
    console = Console(ConsoleParts(admin=config.admin, config=lambda: config, status=None, store=store,
                                   channels=lambda: None, last_reload=lambda: refused))
    app = build_app([], mounts=[console.mount()])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8025") as c:
        await login(c)
        page = (await c.get("/console/config")).text
        assert "2023-11-14 22:13:20 UTC: refused" in page and "esmes[0].password: is empty" in page
        assert "previous config" in page


async def test_a_failing_page_answers_500_and_logs_the_traceback(store, tmp_path, caplog):
    async def broken_status() -> dict:
        raise RuntimeError("status exploded")

    async with console_client(store, tmp_path, status=broken_status) as c:
        await login(c)
        r = await c.get("/console/")
        assert r.status_code == 500 and "status exploded" not in r.text
        assert "console: GET /console/ failed" in caplog.text and "status exploded" in caplog.text


def test_sessions_end_when_idle_at_their_age_and_past_the_limit():
    from bridge.frontends.console import auth

    now = [0.0]
    sessions = auth.Sessions(lambda: now[0])
    cookie, _ = sessions.new("token")
    now[0] += auth.IDLE_SECONDS - 1
    assert sessions.get(cookie) is not None  # used: the idle time starts again
    now[0] += auth.IDLE_SECONDS - 1
    assert sessions.get(cookie) is not None
    now[0] += auth.IDLE_SECONDS + 1
    assert sessions.get(cookie) is None  # idle too long
    cookie, _ = sessions.new("token")
    for _ in range(int(auth.MAX_AGE_SECONDS // 3600) + 1):
        now[0] += 3600
        sessions.get(cookie)
    assert sessions.get(cookie) is None  # in use all along, but older than MAX_AGE_SECONDS
    cookies = [sessions.new("password")[0] for _ in range(auth.MAX_SESSIONS + 5)]
    assert len(sessions) == auth.MAX_SESSIONS
    assert sessions.get(cookies[0]) is None and sessions.get(cookies[-1]) is not None
