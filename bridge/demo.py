"""``smpp-bridge demo``: the bridge on emulated hardware, on loopback, in one process.

Three sites:

* ``goip`` (the default): one emulated GoIP with 8 lines (HTTP API) and a catch-all route.
* ``mixed``: a site with one device of each common kind - a GoIP driven over HTTP, a GoIP whose
  SMS server is the bridge (UDP), an LTE router ("SMS via URL") and an Android phone (SMSGate,
  its webhooks coming to the admin port with a shared signing key) - routed by destination
  prefix, with failover from one device kind to another when a route has no healthy channel.
  The config is written to the data directory as ``bridge.yaml`` and loaded like any other
  (so it is checked, and it is a ready example of a mixed site to copy).

* ``upstream``: SIM channels first and an upstream SMSC connector when they are down, and the
  reverse (``demo_upstream.py``).

Every emulator runs in the demo's own trio run and keeps its HTTP test hooks (``/emulator/sent``,
``/emulator/faults``, ``/emulator/inject``); the banner says how to use them to watch messages go
out, inject inbound SMS and trigger a failover.
"""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path
from typing import Any

import attrs
import trio

SITES = ("goip", "mixed", "upstream")

# The mixed site's names, shown in the banner and used by the e2e test of the demo.
GOIP_HTTP, GOIP_UDP, ROUTER, PHONE = "goip-http", "goip-udp", "lte-router", "phone"
GOIP_HTTP_LINES = 4
GOIP_UDP_LINES = {"1": "gw1", "2": "gw2"}
UDP_PASSWORD = "demo-sms"
SIGNING_KEY = "demo-webhook-signing-key"
# (route, prefix, device, failover route)
MIXED_ROUTES = (
    ("germany", "+49", GOIP_HTTP, "switzerland"),
    ("austria", "+43", GOIP_UDP, "germany"),
    ("switzerland", "+41", ROUTER, "germany"),
    ("france", "+33", PHONE, "germany"),
    ("everything", None, GOIP_HTTP, "switzerland"),
)
HEALTH_INTERVAL = 3.0


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def demo_common_yaml(*, smpp_port: int, admin_port: int, store_path: str, admin_note: str = "") -> str:
    """What every demo site's config starts with: SMPP on loopback, the ESME demo/demo, the admin
    port on loopback (``admin_note``: a comment line above it), the store."""
    note = f"  # {admin_note}\n" if admin_note else ""
    return (
        f"smpp:\n  listeners:\n    - host: 127.0.0.1\n      port: {smpp_port}\n"
        "esmes:\n  - system_id: demo\n    password: demo\n"
        '    allowed_ips: [127.0.0.1, "::1"]\n    max_binds: 10\n'
        f"admin:\n  host: 127.0.0.1\n{note}  port: {admin_port}\n"
        f"store:\n  path: {store_path}\n"
    )


def mixed_site_yaml(
    *,
    smpp_port: int,
    admin_port: int,
    goip_url: str,
    udp_port: int,
    router_url: str,
    phone_url: str,
    store_path: str = "data/bridge.sqlite3",
) -> str:
    """The mixed site's config (inline secrets: the file must be chmod 600)."""
    routes = []
    for name, prefix, device, failover in MIXED_ROUTES:
        match = f'    prefixes: ["{prefix}"]\n' if prefix else ""
        routes.append(f"  - name: {name}\n{match}    channels: [{device}]\n    failover: {failover}\n")
    line_ids = ", ".join(f"{k}: {v}" for k, v in GOIP_UDP_LINES.items())
    head = textwrap.dedent(
        f"""\
        # smpp-bridge demo: a mixed site on emulated hardware (written by `smpp-bridge demo --site mixed`).
        # One device of each kind, routes by destination prefix, failover between device kinds.
        {{common}}
        devices:
          - name: {GOIP_HTTP}
            kind: goip_http
            url: {goip_url}
            username: admin
            password: admin
            lines: {GOIP_HTTP_LINES}
            timeout: 3
            status_poll_interval: 0.3
            inbox_poll_interval: 1
            health_interval: {HEALTH_INTERVAL}
            caps: {{per_minute: 0}}
          - name: {GOIP_UDP}
            kind: goip_udp
            listen_host: 127.0.0.1
            listen_port: {udp_port}
            line_ids: {{{line_ids}}}
            password: {UDP_PASSWORD}
            keepalive_timeout: 12
            status_poll_interval: 0.3
            status_timeout: 30
            inbox_poll_interval: 1
            health_interval: {HEALTH_INTERVAL}
            caps: {{per_minute: 0}}
          - name: {ROUTER}
            kind: router
            url: {router_url}
            username: user1
            password: user_pass
            timeout: 5
            inbox_poll_interval: 1
            health_interval: {HEALTH_INTERVAL}
            caps: {{per_minute: 0}}
          - name: {PHONE}
            kind: smsgate
            url: {phone_url}
            username: sms
            password: password
            sims: 1
            webhook_secret: {SIGNING_KEY}
            register_webhooks: true
            webhook_url: http://127.0.0.1:{admin_port}/webhooks/smsgate/{PHONE}
            timeout: 3
            status_poll_interval: 0.5
            status_timeout: 30
            inbox_poll_interval: 0.5
            health_interval: {HEALTH_INTERVAL}
            caps: {{per_minute: 0}}
        # First match wins. A route whose channels are all out of service (logged out,
        # quarantined, paused) sends through its failover route meanwhile.
        routes:
        """
    )
    head = head.replace("{common}\n", demo_common_yaml(
        smpp_port=smpp_port, admin_port=admin_port, store_path=store_path,
        admin_note=f"The SMSGate phone's webhooks come here: POST /webhooks/smsgate/{PHONE}"))
    tail = textwrap.dedent(
        """\
        scheduler:
          retry_backoff: 2
          retry_backoff_max: 10
          logout_cooldown: 20
          quarantine_base: 5
          quarantine_max: 30
        receipts:
          no_report: accepted
        inbound:
          default_esme: demo
        """
    )
    return head + "".join(routes) + tail


def _admin_line(app: Any, destination: str = "+15550001") -> str:
    if app.admin_port is None:
        return ""
    url = f"http://127.0.0.1:{app.admin_port}"
    return (
        f"  web console: {url}/console/ (the demo has no admin token: on 127.0.0.1 just press Log in;\n"
        f"    elsewhere log in with admin.token or admin.console_password_hash)\n"
        f"  admin API and metrics: {url}/metrics, "
        f"/api/status (or: smpp-bridge status --admin {url})\n"
        f"  HTTP send API: POST {url}/api/v1/messages as ESME 'demo' (Basic auth demo:demo), e.g.\n"
        f"    curl -u demo:demo -H 'Content-Type: application/json' "
        f"-d '{{\"to\": \"{destination}\", \"text\": \"hello\", \"receipt\": true}}' {url}/api/v1/messages\n"
    )


def _smpplib_example(port: int, destination: str) -> str:
    """A script that runs as printed (tests/ops/test_operator_cli.py runs it): send one
    message, print its id and its delivery receipt, unbind."""
    return (
        "  for example, with smpplib (pip install smpplib), as a script:\n"
        "    import smpplib.client\n"
        f"    c = smpplib.client.Client('127.0.0.1', {port}); c.connect()\n"
        "    c.bind_transceiver(system_id='demo', password='demo')\n"
        "    receipts = []\n"
        "    c.set_message_sent_handler(lambda pdu: print('accepted as', pdu.message_id.decode()))\n"
        "    c.set_message_received_handler(lambda pdu: receipts.append(pdu.short_message.decode()))\n"
        f"    c.send_message(source_addr='demo', destination_addr='{destination}',\n"
        "                   short_message=b'hello', registered_delivery=1)\n"
        "    while not receipts:  # the submit_sm_resp, then the receipt (a few seconds)\n"
        "        c.read_once()\n"
        "    print('receipt:', receipts[0])\n"
        "    c.unbind(); c.disconnect()\n"
    )


async def run_goip_site(data_dir: Path, smpp_port: int, admin_port: int) -> None:
    """The default demo: one emulated GoIP (8 lines, HTTP API), a catch-all route."""
    from .app import App
    from .config import default_demo_config
    from .devices.goip_http.emulator import GoipEmulator

    async with trio.open_nursery() as nursery:
        # A GoIP with 8 lines and fast timings, so receipts come back within seconds.
        emulator = GoipEmulator(lines=8, send_duration=0.3)
        goip_port = await nursery.start(emulator.serve, "127.0.0.1", 0)
        config = default_demo_config(
            data_dir,
            smpp_port=smpp_port,
            goip_url=f"http://127.0.0.1:{goip_port}",
            goip_lines=8,
        )
        config = attrs.evolve(config, admin=attrs.evolve(config.admin, port=admin_port))
        app = App(config, handle_signals=True)
        await nursery.start(app.run)
        port = app.smpp_ports[0]
        print(
            "smpp-bridge demo is running.\n"
            f"  store: {config.store.path}\n"
            f"  emulated GoIP (8 lines): http://127.0.0.1:{goip_port}/ "
            f"(GET /emulator/sent lists what it 'sent')\n"
            f"  bind any SMPP 3.4 client to 127.0.0.1:{port} with system_id 'demo', password 'demo'\n"
            f"{_admin_line(app)}"
            f"{_smpplib_example(port, '+15550001')}"
            f"  SMPP on port(s) [{port}]\n"
            "  (smpp-bridge demo --site mixed runs a site with a GoIP, a GoIP in SMS-server mode,\n"
            "   an LTE router and an Android phone, with routes by prefix and failover)\n"
            "  Ctrl-C stops it.",
            flush=True,
        )
        await app.stopped.wait()
        nursery.cancel_scope.cancel()


async def run_mixed_site(data_dir: Path, smpp_port: int, admin_port: int) -> None:
    """GoIP (HTTP) + GoIP (UDP SMS-server mode) + LTE router + Android phone (SMSGate)."""
    from .app import App
    from .config import load_config
    from .devices.goip_http.emulator import GoipEmulator
    from .devices.goip_udp.emulator import GoipUdpEmulator
    from .devices.router.emulator import RouterEmulator
    from .devices.smsgate.emulator import SmsGateEmulator

    notes = []
    if admin_port == 0:
        admin_port = free_tcp_port()
        notes.append(
            f"  (--admin-port 0: the phone's webhooks need the admin port, so it is on {admin_port})\n"
        )
    udp_port = free_udp_port()
    async with trio.open_nursery() as nursery:
        goip = GoipEmulator(lines=GOIP_HTTP_LINES, send_duration=0.3)
        goip_port = await nursery.start(goip.serve, "127.0.0.1", 0)
        router = RouterEmulator(username="user1", password="user_pass", send_duration=0.3)
        router_port = await nursery.start(router.serve, "127.0.0.1", 0)
        phone = SmsGateEmulator(username="sms", password="password", sims=1, signing_key=SIGNING_KEY,
                                process_delay=0.1, send_delay=0.3, deliver_delay=0.5)
        phone_port = await nursery.start(phone.serve, "127.0.0.1", 0)

        data_dir.mkdir(parents=True, exist_ok=True)
        config_path = data_dir / "bridge.yaml"
        config_path.write_text(
            mixed_site_yaml(
                smpp_port=smpp_port,
                admin_port=admin_port,
                goip_url=f"http://127.0.0.1:{goip_port}",
                udp_port=udp_port,
                router_url=f"http://127.0.0.1:{router_port}",
                phone_url=f"http://127.0.0.1:{phone_port}",
                store_path="bridge.sqlite3",
            )
        )
        os.chmod(config_path, 0o600)  # inline passwords: only the owner may read it
        config = load_config(config_path)
        app = App(config, handle_signals=True, config_path=config_path)
        await nursery.start(app.run)
        # The GoIP in SMS-server mode calls the bridge: it starts once the bridge listens.
        udp = GoipUdpEmulator("127.0.0.1", udp_port, GOIP_UDP_LINES, UDP_PASSWORD, keepalive_interval=4.0,
                              send_duration=0.3, retransmit_interval=1.0, delivery_delay=0.5)
        await nursery.start(udp.run)
        udp_control = await nursery.start(udp.serve_control, "127.0.0.1", 0)
        await _settle(app, udp)

        port = app.smpp_ports[0]
        g, r, p, u = (f"http://127.0.0.1:{x}" for x in (goip_port, router_port, phone_port, udp_control))
        post = "curl -s -X POST -H 'Content-Type: application/json'"
        lines_out = ", ".join(f'"{n}": null' for n in range(1, GOIP_HTTP_LINES + 1))
        lines_in = ", ".join(str(n) for n in range(1, GOIP_HTTP_LINES + 1))
        kinds = {GOIP_HTTP: "GoIP HTTP", GOIP_UDP: "GoIP UDP", ROUTER: "LTE router", PHONE: "phone"}
        route_lines = "".join(
            f"    {(prefix or 'other') + '...' if prefix else 'anything else':<14} {name:<12} -> "
            f"{device} ({kinds[device]}); failover: {failover}\n"
            for name, prefix, device, failover in MIXED_ROUTES
        )
        print(
            "smpp-bridge demo (mixed site) is running.\n"
            f"  config: {config_path} (a complete mixed-site config: read it, copy it)\n"
            f"  store: {config.store.path}\n"
            f"  bind any SMPP 3.4 client to 127.0.0.1:{port} with system_id 'demo', password 'demo'\n"
            f"{_admin_line(app, '+4915550001')}"
            f"{''.join(notes)}"
            "  devices (emulated here; GET <url>/emulator/sent lists what each 'sent'):\n"
            f"    {GOIP_HTTP:<10} GoIP, HTTP API, {GOIP_HTTP_LINES} lines: {g}/\n"
            f"    {GOIP_UDP:<10} GoIP in SMS-server mode (it calls the bridge on udp 127.0.0.1:{udp_port}), "
            f"2 lines; test hooks: {u}/\n"
            f"    {ROUTER:<10} LTE router, SMS via URL: {r}/\n"
            f"    {PHONE:<10} Android phone (SMSGate), webhooks to "
            f"http://127.0.0.1:{admin_port}/webhooks/smsgate/{PHONE}: {p}/\n"
            "  routes by destination (first match wins):\n"
            f"{route_lines}"
            "  receipts: GoIP HTTP DONE -> DELIVRD; GoIP UDP and phone -> DELIVRD on the handset's report;\n"
            "            router (no reports) -> ACCEPTD (receipts.no_report)\n"
            "  try a failover (health checks run every "
            f"{HEALTH_INTERVAL:g} s):\n"
            f"    log out every GoIP HTTP line:  {post} {g}/emulator/faults -d '{{\"logout\": {{{lines_out}}}}}'\n"
            f"      then +49... goes out through the router ({r}/emulator/sent);\n"
            f"      undo: {post} {g}/emulator/faults -d '{{\"login\": [{lines_in}]}}'\n"
            f"    take the phone off the network:  {post} {p}/emulator/faults -d '{{\"hang\": true}}'\n"
            f"      then +33... goes out through the GoIP; undo: -d '{{\"hang\": false}}'\n"
            f"    silence the GoIP's UDP lines:     {post} {u}/emulator/faults -d '{{\"silence\": {{\"1\": true, \"2\": true}}}}'\n"
            "      then +43... goes out through the GoIP HTTP once the keepalives are overdue\n"
            "  inbound SMS (reach the ESME as deliver_sm):\n"
            f"    {post} {g}/emulator/inject -d '{{\"line\": 1, \"sender\": \"+4915112345\", \"text\": \"hi\"}}'\n"
            f"    (same body without line for {r}/emulator/inject and {p}/emulator/inject; "
            f"{u}/emulator/inject takes a line)\n"
            f"{_smpplib_example(port, '+4915550001')}"
            f"  SMPP on port(s) [{port}]\n"
            "  Ctrl-C stops it.",
            flush=True,
        )
        await app.stopped.wait()
        nursery.cancel_scope.cancel()


async def _settle(app: Any, udp: Any) -> None:
    """Until the emulated GoIP's UDP lines have registered and every channel is in service (the
    bridge's first health check ran before the GoIP called in), so the demo starts whole."""
    with trio.move_on_after(10):
        while not all(udp.registered(line) for line in GOIP_UDP_LINES):
            await trio.sleep(0.05)
        await app.monitor.check(GOIP_UDP, app.drivers[GOIP_UDP])
        if app.scheduler is not None:
            while any(ch.state != "ready" for ch in app.scheduler.channels.values()):
                await trio.sleep(0.05)


async def run_demo(site: str, data_dir: Path, smpp_port: int, admin_port: int) -> None:
    if site == "goip":
        await run_goip_site(data_dir, smpp_port, admin_port)
    elif site == "mixed":
        await run_mixed_site(data_dir, smpp_port, admin_port)
    elif site == "upstream":
        from .demo_upstream import run_upstream_site

        await run_upstream_site(data_dir, smpp_port, admin_port)
    else:
        raise ValueError(f"unknown demo site {site!r}; sites: {', '.join(SITES)}")


__all__ = ["SITES", "mixed_site_yaml", "run_demo", "run_goip_site", "run_mixed_site"]
