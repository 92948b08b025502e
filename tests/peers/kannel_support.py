"""Kannel (Debian's ``kannel`` package) as a real SMS router in front of the bridge.

Kannel's bearerbox binds to the bridge as its SMSC over SMPP (one transceiver bind), and its
smsbox offers the classic ``/cgi-bin/sendsms`` HTTP interface to applications, calls a
``dlr-url`` for each delivery report and a ``get-url`` for each inbound SMS. ``KannelRouter``
writes one configuration for both boxes, starts them on free ports and runs a small HTTP
server that records what Kannel calls back (the application side).
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import httpx

from e2e_support import free_port, wait_for

BEARERBOX = shutil.which("bearerbox") or "/usr/sbin/bearerbox"
SMSBOX = shutil.which("smsbox") or "/usr/sbin/smsbox"


def kannel_installed() -> bool:
    return Path(BEARERBOX).exists() and Path(SMSBOX).exists()


class _Recorder(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[tuple[str, dict[str, str]]] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Recorder

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        self.server.calls.append((url.path, query))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"")  # an empty reply: smsbox sends nothing back to the handset

    def log_message(self, *args: object) -> None:
        pass


class KannelRouter:
    """bearerbox + smsbox bound to a bridge at ``bridge_port`` as ``system_id``/``password``."""

    def __init__(self, workdir: Path, bridge_port: int, system_id: str, password: str) -> None:
        self.workdir = workdir
        self.admin_port = free_port()
        self.smsbox_port = free_port()
        self.sendsms_port = free_port()
        self.app = _Recorder()
        threading.Thread(target=self.app.serve_forever, daemon=True).start()
        app = f"http://127.0.0.1:{self.app.server_address[1]}"
        self.conf = workdir / "kannel.conf"
        self.conf.write_text(
            f"""
group = core
admin-port = {self.admin_port}
admin-password = adminpw
status-password = adminpw
smsbox-port = {self.smsbox_port}
box-allow-ip = 127.0.0.1
admin-allow-ip = 127.0.0.1
log-file = "{workdir}/bearerbox.log"
log-level = 0
access-log = "{workdir}/access.log"
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = site1
host = 127.0.0.1
port = {bridge_port}
transceiver-mode = true
smsc-username = "{system_id}"
smsc-password = "{password}"
system-type = ""
enquire-link-interval = 30
reconnect-delay = 1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {self.smsbox_port}
sendsms-port = {self.sendsms_port}
log-file = "{workdir}/smsbox.log"
log-level = 0

group = sendsms-user
username = app
password = apppw

group = sms-service
keyword = default
catch-all = yes
max-messages = 0
get-url = "{app}/mo?from=%p&to=%P&text=%a&smsc=%i"
"""
        )
        self.app_url = app
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float = 20.0) -> KannelRouter:
        for exe in (BEARERBOX, SMSBOX):
            log = open(self.workdir / f"{Path(exe).name}.out", "wb")
            self.procs.append(subprocess.Popen([exe, str(self.conf)], stdout=log, stderr=subprocess.STDOUT))
            if exe == BEARERBOX:
                wait_for(lambda: self._port_open(self.smsbox_port), timeout)
        wait_for(lambda: self._port_open(self.sendsms_port), timeout)
        wait_for(self.smsc_online, timeout)
        return self

    @staticmethod
    def _port_open(port: int) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def status(self) -> str:
        r = httpx.get(f"http://127.0.0.1:{self.admin_port}/status.txt", params={"password": "adminpw"}, timeout=5)
        return r.text

    def smsc_online(self) -> bool:
        return "site1" in (s := self.status()) and "online" in s

    def sendsms(self, to: str, text: str, *, sender: str = "4930000", dlr_id: str = "", **extra: str) -> httpx.Response:
        params = {"username": "app", "password": "apppw", "to": to, "text": text, "from": sender, **extra}
        if dlr_id:
            params["dlr-mask"] = "3"  # 1 delivered + 2 undelivered
            params["dlr-url"] = f"{self.app_url}/dlr?id={dlr_id}&status=%d&answer=%A&smscid=%F"
        return httpx.get(f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms", params=params, timeout=10)

    def calls(self, path: str) -> list[dict[str, str]]:
        return [q for p, q in list(self.app.calls) if p == path]

    def log(self) -> str:
        return "".join(
            (self.workdir / name).read_text(errors="replace")
            for name in ("bearerbox.log", "smsbox.log")
            if (self.workdir / name).exists()
        )

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.app.shutdown()
        self.app.server_close()
