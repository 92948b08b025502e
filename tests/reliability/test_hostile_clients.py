"""Group 3b, bad SMPP input against the real process: slow-loris connections, half-open TCP,
200 idle connections, PDUs split byte by byte and glued together, a bind password brute force.

Already covered elsewhere, not repeated here: a bad command_length, an unknown command_id and a
malformed body (tests/e2e/test_smpp_frontend.py), enquire_link PDUs split byte by byte and
glued (test_pdus_split_byte_by_byte_and_glued there), a silent peer dropped after an unanswered
enquire_link (tests/e2e/test_smpp_sessions.py::test_dead_peer_is_dropped_after_an_unanswered_enquire_link).

Short form only: these are scenarios, not volume (the fuzzers in test_fuzz.py have the volume).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import smpplib.consts as sc
import smpplib.exceptions

from bridge.frontends.smpp.protocol import FAIL_DELAY, FAIL_LIMIT
from bridge.smpp.constants import CommandId, Status
from bridge.smpp.pdu import Pdu, decode, encode
from e2e_support import BridgeProcess, base_config, client, read_until, recv_pdu, submit, wait_for, with_admin
from reliability_support import bind_pdu, connect_from, fd_count, metric_sum, scrape

C = CommandId
ESMES = """
- system_id: alice
  password: secret1
  allowed_ips: [127.0.0.1, 127.0.0.2]
  max_binds: 5
- system_id: idle
  password: idlepw
  allowed_ips: [127.0.0.1]
  max_binds: 200
"""


def raw(pdu: Pdu) -> bytes:
    return encode(pdu)


def submit_pdu(seq: int, text: bytes) -> bytes:
    return raw(Pdu(C.SUBMIT_SM, 0, seq, {"source_addr": "app", "dest_addr_ton": 1, "destination_addr": "+4917012345",
                                         "short_message": text}))


def raw_bound(port: int, system_id: str = "alice", password: str = "secret1", source: str = "127.0.0.1") -> socket.socket:
    s = connect_from(source, port)
    s.sendall(bind_pdu(system_id, password))
    got = recv_pdu(s)
    assert got is not None and got[1] == 0, got
    return s


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    config = base_config(esmes=ESMES).replace("session_init: 5", "session_init: 3")
    b = BridgeProcess(tmp_path_factory.mktemp("hostile"), config).start()
    yield b
    assert b.stop() == 0, b.log_text()


# -- slow loris -----------------------------------------------------------------------------------


def test_slow_loris_before_bind_is_closed_by_the_session_init_timer(bridge):
    """Bytes of a bind trickle in, one every 0.25 s: the session_init timer (3 s) closes the
    connection anyway, long before the bind is complete; a real client is served meanwhile."""
    bind = bind_pdu("alice", "secret1")
    lorises = [connect_from("127.0.0.1", bridge.port) for _ in range(10)]
    real = client(bridge.port)
    real.bind_transceiver(system_id="alice", password="secret1")
    sent_bytes = 0
    closed: set[int] = set()
    for i in range(len(bind) - 1):  # never the last byte
        for n, s in enumerate(lorises):
            if n in closed:
                continue
            try:
                s.sendall(bind[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed.add(n)
        sent_bytes = i + 1
        assert submit(real, f"served during slow loris {i}".encode()).status == 0
        if len(closed) == len(lorises):
            break
        time.sleep(0.25)
    for n, s in enumerate(lorises):
        s.settimeout(5)
        assert n in closed or closed_by_peer(s), "a trickling unbound connection was not closed"
        s.close()
    assert sent_bytes < len(bind) - 1, "the bridge waited for the whole trickled bind"
    assert "no bind within session_init timer" in bridge.log_text()
    real.unbind()
    real.disconnect()


def test_slow_loris_after_bind_does_not_hold_up_other_sessions(bridge):
    """A bound ESME sends a submit_sm one byte every 0.1 s. Another ESME's submits are
    answered while it trickles; the slow submit is answered too once it is complete."""
    slow = raw_bound(bridge.port)
    pdu = submit_pdu(7, b"slowly")
    real = client(bridge.port)
    real.bind_transceiver(system_id="alice", password="secret1")
    answered_meanwhile = 0
    for i, byte in enumerate(pdu):
        slow.sendall(bytes([byte]))
        if i < len(pdu) - 1:
            assert submit(real, f"fast {i}".encode()).status == 0
            answered_meanwhile += 1
            time.sleep(0.1)
    got = recv_pdu(slow)
    assert got is not None and got[0] == C.SUBMIT_SM_RESP and got[1] == 0 and got[2] == 7
    assert answered_meanwhile == len(pdu) - 1
    slow.close()
    real.unbind()
    real.disconnect()


# -- many idle connections ------------------------------------------------------------------------


def test_200_idle_connections_and_a_real_client_is_still_served(bridge):
    pid = bridge.proc.pid
    # Earlier tests' connections may still be closing (session_init timer): start from a
    # settled count, so that a count going down meanwhile cannot hide the 200 new ones.
    settled, before = time.monotonic(), fd_count(pid)
    while time.monotonic() - settled < 1.0:
        time.sleep(0.1)
        now_count = fd_count(pid)
        if now_count != before:
            settled, before = time.monotonic(), now_count
    # Bound and silent first (binding 100 takes a while on a loaded machine), then 100 that
    # never bind: those are closed by the session_init timer, so they must be counted soon.
    idle = [raw_bound(bridge.port, "idle", "idlepw") for _ in range(100)]
    idle += [connect_from("127.0.0.1", bridge.port) for _ in range(100)]
    try:
        # They are all open at the bridge (it accepts them as it gets to them).
        wait_for(lambda: fd_count(pid) >= before + 200, timeout=15)
        real = client(bridge.port)
        real.bind_transceiver(system_id="alice", password="secret1")
        ids = [submit(real, f"among the idle {i}".encode()).message_id.decode() for i in range(50)]
        real.query_message(message_id=ids[-1], source_addr="app")
        assert read_until(real, "query_sm_resp").status == 0
        real.unbind()
        real.disconnect()
    finally:
        for s in idle:
            s.close()
    # The bridge lets go of every one of them: no file descriptor is left behind.
    deadline = time.monotonic() + 10
    while fd_count(pid) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fd_count(pid) <= before


# -- split and glued --------------------------------------------------------------------------------


def test_submits_split_byte_by_byte_and_glued_are_all_answered_and_stored(bridge):
    """Extends test_smpp_frontend.py's enquire_link case to submit_sm with bodies: 40 submits in
    one write, then one submit byte by byte, then 40 more glued to a partial one."""
    s = raw_bound(bridge.port)
    glued = b"".join(submit_pdu(100 + i, f"glued {i}".encode()) for i in range(40))
    s.sendall(glued)
    one = submit_pdu(200, b"byte by byte")
    for b in one:
        s.sendall(bytes([b]))
    tail = submit_pdu(300, b"across writes")
    more = b"".join(submit_pdu(301 + i, f"more {i}".encode()) for i in range(40))
    s.sendall(more[:-5])
    s.sendall(more[-5:] + tail[:9])
    s.sendall(tail[9:])
    answers = [recv_pdu(s) for _ in range(82)]
    assert all(a is not None and a[0] == C.SUBMIT_SM_RESP and a[1] == 0 for a in answers)
    assert sorted(a[2] for a in answers) == sorted([*range(100, 140), 200, *range(301, 341), 300])
    ids = [a[3].rstrip(b"\0").decode() for a in answers]
    s.close()
    with bridge.db() as db:
        texts = {t for (t,) in db.execute(f"SELECT text FROM messages WHERE id IN ({','.join(ids)})")}
    assert {"byte by byte", "across writes", "glued 0", "glued 39", "more 0", "more 39"} <= texts and len(texts) == 82


# -- half-open TCP ----------------------------------------------------------------------------------


class HalfOpenPeer:
    """A bound ESME that vanishes without a FIN.

    With network namespaces (root, CAP_SYS_ADMIN) the client runs in its own namespace behind
    a veth pair, and the link is taken down under it: the bridge's packets are dropped, nothing
    is acknowledged, no FIN or RST ever arrives - a real half-open connection. Without them the
    client simply stops reading and writing and never closes (the bridge cannot tell the
    difference until TCP gives up, which is what the timers are for)."""

    def __init__(self, tag: str) -> None:
        self.ns = f"smppho{os.getpid() % 100000}{tag}"
        self.host_if = f"vh{os.getpid() % 100000}{tag}"[:15]
        self.peer_if = f"vp{os.getpid() % 100000}{tag}"[:15]
        octet = 16 + os.getpid() % 200
        self.host_ip, self.peer_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
        self.netns = self._setup()
        self.proc: subprocess.Popen[str] | None = None
        self.sock: socket.socket | None = None

    @property
    def mode(self) -> str:
        return "network namespace, link down" if self.netns else "silent peer (no namespaces here)"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def _setup(self) -> bool:
        if shutil.which("ip") is None or os.geteuid() != 0:
            return False
        try:
            self._ip("netns", "add", self.ns)
            self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
            self._ip("link", "set", self.peer_if, "netns", self.ns)
            self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            self._ip("link", "set", self.host_if, "up")
            self._ip("-n", self.ns, "addr", "add", f"{self.peer_ip}/30", "dev", self.peer_if)
            self._ip("-n", self.ns, "link", "set", self.peer_if, "up")
            self._ip("-n", self.ns, "link", "set", "lo", "up")
            return True
        except (subprocess.SubprocessError, OSError):
            self.cleanup()
            return False

    def listen_host(self) -> str:
        return self.host_ip if self.netns else "127.0.0.1"

    def source(self) -> str:
        return self.peer_ip if self.netns else "127.0.0.1"

    def bind(self, port: int, system_id: str, password: str) -> None:
        if not self.netns:
            self.sock = raw_bound(port, system_id, password)
            return
        script = (
            "import socket,sys,time\n"
            f"s=socket.create_connection(({self.host_ip!r},{port}),timeout=10)\n"
            f"s.sendall(bytes.fromhex({bind_pdu(system_id, password).hex()!r}))\n"
            "h=s.recv(16)\n"
            "print('bound' if len(h)==16 and h[8:12]==bytes(4) else 'refused', flush=True)\n"
            "time.sleep(600)\n"
        )
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", script],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "bound"

    def vanish(self) -> None:
        """Gone without a FIN: the link goes down first, then the client process dies."""
        if self.netns:
            self._ip("link", "set", self.host_if, "down")
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(5)
        # silent peer: keep the socket open, never read, never write

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)
        if self.sock is not None:
            self.sock.close()


def test_half_open_peer_is_dropped_by_enquire_link_and_frees_its_bind(tmp_path):
    peer = HalfOpenPeer("a")
    try:
        host = peer.listen_host()
        esmes = f"""
- system_id: solo
  password: solopw
  allowed_ips: [127.0.0.1, {peer.source()}]
  max_binds: 1
"""
        config = (
            base_config(esmes=esmes)
            .replace("enquire_link: 30", "enquire_link: 1")
            .replace("response: 5", "response: 1")
            .replace("inactivity: 120", "inactivity: 20")
            .replace("    - host: 127.0.0.1\n      port: 0\n",
                     f"    - host: 127.0.0.1\n      port: 0\n    - host: {host}\n      port: 0\n" if peer.netns else
                     "    - host: 127.0.0.1\n      port: 0\n")
        )
        bridge = BridgeProcess(tmp_path, config).start()
        try:
            port = bridge.ports[-1]
            peer.bind(port, "solo", "solopw")
            # The one bind slot is taken: a second bind is refused while the peer "lives".
            c = client(bridge.port)
            with pytest.raises(smpplib.exceptions.PDUError) as err:
                c.bind_transceiver(system_id="solo", password="solopw")
            assert err.value.args[1] == sc.SMPP_ESME_RBINDFAIL
            c.disconnect()
            peer.vanish()
            # The bridge probes the idle link, gets no answer, drops the session and frees the
            # slot: the ESME binds again from its other address.
            deadline = time.monotonic() + 20
            while True:
                c = client(bridge.port)
                try:
                    c.bind_transceiver(system_id="solo", password="solopw")
                    break
                except smpplib.exceptions.PDUError:
                    c.disconnect()
                    assert time.monotonic() < deadline, "the half-open session kept its bind"
                    time.sleep(0.5)
            assert submit(c, b"after the half-open peer").status == 0
            c.unbind()
            c.disconnect()
            log = bridge.log_text()
            assert re.search(rf"closing SMPP session solo from {re.escape(peer.source())}: peer did not answer enquire_link", log), log
            print(f"half-open mode: {peer.mode}")
        finally:
            bridge.stop()
    finally:
        peer.cleanup()


# -- bind password brute force ----------------------------------------------------------------------


def timed_bind(source: str, port: int, password: str) -> tuple[int, float]:
    """(bind_resp status, seconds until the answer) for one bind attempt from ``source``."""
    s = connect_from(source, port)
    started = time.monotonic()
    s.sendall(bind_pdu("alice", password))
    got = recv_pdu(s)
    elapsed = time.monotonic() - started
    s.close()
    assert got is not None
    return got[1], elapsed


def test_bind_brute_force_is_slowed_down_logged_and_does_not_lock_out_the_real_esme(tmp_path):
    # session_init 7 s: the queue of attempts from one address is at most that long.
    config = with_admin(base_config(esmes=ESMES)).replace("session_init: 5", "session_init: 7")
    bridge = BridgeProcess(tmp_path, config).start()
    try:
        attacker, port = "127.0.0.2", bridge.port
        # The first FAIL_LIMIT wrong guesses are answered at once...
        for i in range(FAIL_LIMIT):
            status, elapsed = timed_bind(attacker, port, f"guess{i}")
            assert status == Status.RINVPASWD
        # ...then attempts from that address take turns, one per FAIL_DELAY, however many
        # connections it opens at once; those whose turn would come after session_init (7 s:
        # 3 turns) are refused at once without being checked.
        parallel, queued = 8, 3
        results: list[tuple[int, float]] = []
        threads = [threading.Thread(target=lambda i=i: results.append(timed_bind(attacker, port, f"par{i}")))
                   for i in range(parallel)]
        started = time.monotonic()
        for t in threads:
            t.start()
        while len(results) < parallel - queued and time.monotonic() - started < 5:
            time.sleep(0.01)
        # Meanwhile the real ESME binds from its usual address, at once: it is not locked out.
        real = client(port)
        real.bind_transceiver(system_id="alice", password="secret1")
        real_bound_while_attack_waits = len(results) == parallel - queued
        assert submit(real, b"not locked out").status == 0
        real.unbind()
        real.disconnect()
        for t in threads:
            t.join(30)
        attack_time = time.monotonic() - started
        assert real_bound_while_attack_waits
        checked = sorted(e for s, e in results if s == Status.RINVPASWD)
        unchecked = [e for s, e in results if s == Status.RBINDFAIL]
        assert len(checked) == queued and len(unchecked) == parallel - queued, results
        assert max(unchecked) < min(checked)  # refused at once, not after a wait
        # One checked guess per FAIL_DELAY from one address.
        assert all(e >= (n + 1) * FAIL_DELAY * 0.9 for n, e in enumerate(checked)), checked
        # The failing credentials are slowed, not the address: the real ESME on the attacker's
        # own (shared) host binds at once while wrong guesses from it wait their turns.
        during: list[tuple[int, float]] = []
        guesses = [threading.Thread(target=lambda i=i: during.append(timed_bind(attacker, port, f"more{i}")))
                   for i in range(2)]
        for t in guesses:
            t.start()
        time.sleep(0.3)  # let the two guesses take their turns first (a head start, not a wait for a result)
        status, elapsed = timed_bind(attacker, port, "secret1")
        assert status == Status.ROK and elapsed < FAIL_DELAY / 2, (status, elapsed)
        assert len(during) == 0  # the guesses are still waiting for their turns
        for t in guesses:
            t.join(30)
        assert sorted(s for s, _ in during) == [Status.RINVPASWD] * 2
        assert sorted(e for _, e in during)[-1] >= 2 * FAIL_DELAY * 0.9, during  # still one per FAIL_DELAY
        # Logged and counted (the log line of the last refusal may follow its answer: wait for it).
        wrong = r"bind refused: system_id='alice' from 127\.0\.0\.2: wrong password"
        wait_for(lambda: len(re.findall(wrong, bridge.log_text())) >= FAIL_LIMIT + queued + 2, timeout=5)
        log = bridge.log_text()
        refused = re.findall(wrong, log)
        assert len(refused) == FAIL_LIMIT + queued + 2
        assert len(re.findall(r"from 127\.0\.0\.2: too many failed binds for this system_id from this address", log)) == parallel - queued
        metrics = scrape(bridge.admin_url)
        assert metric_sum(metrics, "smpp_bridge_bind_failures_total", reason="wrong_password") == FAIL_LIMIT + queued + 2
        print(f"brute force: {FAIL_LIMIT} fast refusals, then of {parallel} parallel guesses {queued} were checked, "
              f"one per {FAIL_DELAY:g} s (the last after {checked[-1]:.1f} s), {parallel - queued} refused unchecked")
    finally:
        bridge.stop()
