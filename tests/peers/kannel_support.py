"""Kannel (Debian's ``kannel`` package) as a real SMS router in front of the bridge.

Kannel's bearerbox binds to the bridge as its SMSC over SMPP (one transceiver bind), and its
smsbox offers the classic ``/cgi-bin/sendsms`` HTTP interface to applications, calls a
``dlr-url`` for each delivery report and a ``get-url`` for each inbound SMS. ``KannelRouter``
writes one configuration for both boxes, starts them on free ports and runs a small HTTP
server that records what Kannel calls back (the application side).
"""

from __future__ import annotations

import http.server
import re
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


class KannelConf:
    """A Kannel configuration file as groups of ``key = value`` lines, to rewrite in place.

    Used to run the shipped fleet recipe (``config/fleet/kannel.conf``) with local addresses,
    ports and files: only the values a test must change are touched, every other line is the
    recipe's own."""

    def __init__(self, text: str) -> None:
        self.groups: list[list[list[str]]] = []  # group -> [key, value] pairs, in order
        for raw in text.splitlines():
            line = raw.strip()  # Kannel knows whole-line comments only
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise ValueError(f"not a Kannel line: {raw!r}")
            key, value = (part.strip() for part in line.split("=", 1))
            if key == "group":
                self.groups.append([])
            self.groups[-1].append([key, value])

    def where(self, group: str, **match: str) -> list[list[list[str]]]:
        out = []
        for g in self.groups:
            d = dict((k, v.strip('"')) for k, v in g)
            if d.get("group") == group and all(d.get(k.replace("_", "-")) == v for k, v in match.items()):
                out.append(g)
        return out

    def set(self, group: str, key: str, value: str | int, **match: str) -> None:
        groups = self.where(group, **match)
        assert groups, f"no group {group} {match} in the recipe"
        for g in groups:
            pairs = [p for p in g if p[0] == key]
            if pairs:
                pairs[0][1] = str(value)
            else:
                g.append([key, str(value)])

    def text(self) -> str:
        return "\n\n".join("\n".join(f"{k} = {v}" for k, v in g) for g in self.groups) + "\n"


def single_site_conf(workdir: Path, bridge_port: int, system_id: str, password: str) -> str:
    """One bearerbox + smsbox with one SMSC: the bridge at ``bridge_port``."""
    return f"""
group = core
admin-port = 0
admin-password = adminpw
status-password = adminpw
smsbox-port = 0
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
bearerbox-port = 0
sendsms-port = 0
log-file = "{workdir}/smsbox.log"
log-level = 0

group = sendsms-user
username = app
password = apppw

group = sms-service
keyword = default
catch-all = yes
max-messages = 0
get-url = "APP/mo?from=%p&to=%P&text=%a&smsc=%i"
"""


class KannelRouter:
    """bearerbox + smsbox: by default bound to one bridge at ``bridge_port`` as ``system_id``/
    ``password``; with ``conf``, any configuration (ports, files and the application URL are
    set here, whatever the file says)."""

    def __init__(self, workdir: Path, bridge_port: int = 0, system_id: str = "", password: str = "", *,
                 conf: KannelConf | None = None, smsc_ids: tuple[str, ...] = ("site1",)) -> None:
        self.workdir = workdir
        self.smsc_ids = smsc_ids
        self.admin_port = free_port()
        self.smsbox_port = free_port()
        self.sendsms_port = free_port()
        self.app = _Recorder()
        threading.Thread(target=self.app.serve_forever, daemon=True).start()
        app = f"http://127.0.0.1:{self.app.server_address[1]}"
        conf = conf or KannelConf(single_site_conf(workdir, bridge_port, system_id, password))
        conf.set("core", "admin-port", self.admin_port)
        conf.set("core", "admin-password", "adminpw")
        conf.set("core", "status-password", "adminpw")
        conf.set("core", "smsbox-port", self.smsbox_port)
        conf.set("core", "log-file", f'"{workdir}/bearerbox.log"')
        conf.set("core", "access-log", f'"{workdir}/access.log"')
        conf.set("core", "log-level", 0)
        if any(k == "store-location" for g in conf.where("core") for k, _ in g):
            conf.set("core", "store-location", f'"{workdir}/kannel.store"')
        conf.set("smsbox", "bearerbox-port", self.smsbox_port)
        conf.set("smsbox", "sendsms-port", self.sendsms_port)
        conf.set("smsbox", "log-file", f'"{workdir}/smsbox.log"')
        conf.set("smsbox", "log-level", 0)
        conf.set("sendsms-user", "password", "apppw")
        for g in conf.where("sms-service"):
            for pair in g:
                if pair[0] == "get-url":
                    url = pair[1].strip('"')
                    pair[1] = '"' + app + "/mo?" + url.split("?", 1)[1] + '"'
        self.conf = workdir / "kannel.conf"
        self.conf.write_text(conf.text())
        self.app_url = app
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float = 30.0) -> KannelRouter:
        try:
            for exe in (BEARERBOX, SMSBOX):
                log = open(self.workdir / f"{Path(exe).name}.out", "wb")
                self.procs.append(subprocess.Popen([exe, str(self.conf)], stdout=log, stderr=subprocess.STDOUT))
                if exe == BEARERBOX:
                    wait_for(lambda: self._port_open(self.smsbox_port), timeout)
            wait_for(lambda: self._port_open(self.sendsms_port), timeout)
            wait_for(self.smsc_online, timeout)
        except TimeoutError:
            states = self.smsc_states() if self._port_open(self.admin_port) else "bearerbox not answering"
            self.stop()
            raise RuntimeError(f"Kannel did not come up: {states}\n{self.log()[-3000:]}") from None
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

    def smsc_states(self) -> dict[str, list[str]]:
        """Each SMSC id's connection states from bearerbox's status page ("online", "connecting",
        "re-connecting", "dead"), one entry per connection."""
        states: dict[str, list[str]] = {}
        for line in self.status().splitlines():
            m = re.match(r"\s*(\S+)\[(\S+)\]\s+SMPP:\S+\s+\((\S+)", line)
            if m:
                states.setdefault(m.group(2), []).append(m.group(3))
        return states

    def smsc_online(self, *ids: str) -> bool:
        states = self.smsc_states()
        return all(states.get(i) and all(s == "online" for s in states[i]) for i in ids or self.smsc_ids)

    def sendsms(self, to: str, text: str, *, sender: str = "4930000", dlr_id: str = "", **extra: str) -> httpx.Response:
        params = {"username": "app", "password": "apppw", "to": to, "text": text, "from": sender, **extra}
        if dlr_id:
            params.setdefault("dlr-mask", "3")  # 1 delivered + 2 undelivered (+ 8 accepted: "11")
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
