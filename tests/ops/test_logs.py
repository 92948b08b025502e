"""Process log (masking, formats) and per-ESME PDU logs."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import time

import pytest

from bridge.config import load_config_text
from bridge.logs import (
    MAX_FILE_BYTES,
    PduLog,
    RedactingFilter,
    collect_secrets,
    configure_logging,
    esme_dirname,
    esme_from_dirname,
)
from bridge.smpp.constants import CommandId, Tag
from bridge.smpp.pdu import Pdu

CONFIG = """
esmes:
  - system_id: alice
    password: alicepw1
admin:
  token: admin-token-0123456789
devices:
  - name: goip1
    kind: goip_http
    url: http://192.0.2.10
    password: goip-password-long
    lines: 1
routes:
  - name: all
    channels: [goip1]
"""


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def log_through(fmt: str, level: str, secrets, emit) -> str:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    configure_logging(level, fmt, secrets, stream=stream)
    emit(logging.getLogger("bridge.test"))
    return stream.getvalue()


def test_collect_secrets_finds_every_password_and_the_token():
    cfg = load_config_text(CONFIG)
    assert sorted(collect_secrets(cfg)) == ["admin-token-0123456789", "alicepw1", "goip-password-long"]


def test_secrets_are_masked_in_messages_arguments_and_tracebacks(restore_root_logging):
    secrets = collect_secrets(load_config_text(CONFIG))

    def emit(log):  # type: ignore[no-untyped-def]
        log.info("bind with password %s", "alicepw1")
        log.warning("GET http://192.0.2.10/send.html?u=admin&p=goip-password-long&n=%s", "+4917012345678")
        try:
            raise ValueError("token admin-token-0123456789 refused")
        except ValueError:
            log.exception("failed")

    out = log_through("text", "info", secrets, emit)
    for secret in secrets:
        assert secret not in out
    assert "bind with password ***" in out
    assert "p=***" in out and "+4917*********" in out
    assert "ValueError: token *** refused" in out and "Traceback" in out


def test_debug_shows_numbers_but_never_secrets(restore_root_logging):
    out = log_through("text", "debug", ["alicepw1"],
                      lambda log: log.debug("to +4917012345678 with alicepw1 (message 0000000042)"))
    assert "to +4917012345678 with *** (message 0000000042)" in out


def test_short_secrets_are_masked_where_credentials_are_written(restore_root_logging):
    out = log_through("text", "info", ["admin"], lambda log: log.info(
        "admin HTTP on 127.0.0.1:8025; login user=admin password=admin url http://admin:admin@h/"))
    assert "admin HTTP on 127.0.0.1:8025; login user=*** password=*** url http://admin:***@h/" in out


def test_json_lines_for_log_shippers(restore_root_logging):
    def emit(log):  # type: ignore[no-untyped-def]
        log.warning("device %s is down", "goip1")
        try:
            1 / 0
        except ZeroDivisionError:
            log.error("oops alicepw1", exc_info=True)

    lines = log_through("json", "info", ["alicepw1"], emit).splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "warning" and first["logger"] == "bridge.test" and first["msg"] == "device goip1 is down"
    assert dt.datetime.fromisoformat(first["ts"]).tzinfo is not None
    assert second["msg"] == "oops ***" and "ZeroDivisionError" in second["exc"]


def test_journald_gets_syslog_priorities(restore_root_logging, tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging("info", "text", [], stream=stream)
        logging.getLogger("bridge.test").warning("channel goip1:1 cooling down")
        logging.getLogger("bridge.test").info("bound")
    assert path.read_text().splitlines() == ["<4>bridge.test: channel goip1:1 cooling down", "<6>bridge.test: bound"]


def test_filter_survives_a_record_with_bad_arguments():
    f = RedactingFilter(["x" * 10])
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert f.filter(record) and "unformattable" in record.getMessage()


# -- PDU logs --------------------------------------------------------------------------------


class Conn:
    def __init__(self, esme_id: str = "", peer: str = "127.0.0.1") -> None:
        self.esme_id = esme_id
        self.peer = peer


def read(path):  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pdu_log_per_esme_per_day_with_passwords_and_bodies_masked(tmp_path):
    now = [time.mktime((2024, 5, 1, 12, 0, 0, 0, 0, -1))]
    pl = PduLog(tmp_path, 14, is_esme=lambda s: s in ("alice", "we/ird"), clock=lambda: now[0])
    conn = Conn()
    pl.log_in(conn, Pdu(CommandId.BIND_TRANSCEIVER, 0, 1, {"system_id": "alice", "password": "alicepw1"}))
    pl.log_out(conn, Pdu(CommandId.BIND_TRANSCEIVER_RESP, 0xE, 1, {"system_id": "smpp-bridge"}))  # refused
    conn.esme_id = "alice"
    pl.log_in(conn, Pdu(CommandId.SUBMIT_SM, 0, 2, {"destination_addr": "+4917012345678", "short_message": b"secret text"},
                        {Tag.MESSAGE_PAYLOAD: b"more"}))
    stranger = Conn()
    pl.log_in(stranger, Pdu(CommandId.BIND_TRANSMITTER, 0, 1, {"system_id": "mallory", "password": "guess"}))
    now[0] += 86400  # the next day goes to a new file
    pl.log_in(conn, Pdu(CommandId.ENQUIRE_LINK, 0, 3))
    pl.flush()
    files = {(f.esme, f.date): f for f in pl.files()}
    assert set(files) == {("alice", "2024-05-01"), ("alice", "2024-05-02"), ("_unbound", "2024-05-01")}
    day1 = read(files["alice", "2024-05-01"].path)
    assert [(r["dir"], r["command"]) for r in day1] == [
        ("in", "bind_transceiver"), ("out", "bind_transceiver_resp"), ("in", "submit_sm")]
    assert day1[0]["params"]["password"] == "***"
    assert day1[1]["status"] == "ESME_RINVPASWD"
    assert day1[2]["params"]["short_message"] == {"octets": 11, "masked": True}
    assert day1[2]["tlvs"]["message_payload"] == {"octets": 4, "masked": True}
    assert day1[2]["params"]["destination_addr"] == "+4917012345678"
    text = files["alice", "2024-05-01"].path.read_text() + files["_unbound", "2024-05-01"].path.read_text()
    assert "alicepw1" not in text and "guess" not in text and "secret text" not in text
    assert read(files["_unbound", "2024-05-01"].path)[0]["params"]["system_id"] == "mallory"
    assert oct(files["alice", "2024-05-01"].path.stat().st_mode & 0o777) == "0o600"
    # Retention: 14 days later the first day goes, the second stays.
    now[0] += 14 * 86400
    assert pl.sweep() == 2
    assert {(f.esme, f.date) for f in pl.files()} == {("alice", "2024-05-02")}
    pl.close()


def test_pdu_log_shows_bodies_at_debug_and_stops_growing_at_its_limit(tmp_path, monkeypatch):
    pl = PduLog(tmp_path, 14, show_bodies=True)
    conn = Conn("alice")
    pl.log_in(conn, Pdu(CommandId.SUBMIT_SM, 0, 1, {"short_message": b"hi"}))
    monkeypatch.setattr("bridge.logs.MAX_FILE_BYTES", 600)
    for seq in range(2, 40):
        pl.log_in(conn, Pdu(CommandId.ENQUIRE_LINK, 0, seq))
    pl.flush()
    (f,) = pl.files()
    records = read(f.path)
    assert records[0]["params"]["short_message"] == {"hex": "6869", "octets": 2}
    assert "size limit" in records[-1]["note"] and f.bytes < 800
    assert MAX_FILE_BYTES >= 64 * 2**20
    pl.close()


def test_esme_names_cannot_escape_the_log_directory(tmp_path):
    for name in ("../../etc", "a/b", ".", "..", "we%ird"):
        d = esme_dirname(name)
        assert "/" not in d and d not in (".", "..") and esme_from_dirname(d) == name
    pl = PduLog(tmp_path / "logs", 14)
    (tmp_path / "bridge.yaml").write_text("x")
    assert pl.path_for("..", "bridge") is None and pl.path_for("../..", "2024-01-01") is None


def test_a_running_bridge_logs_json_lines_without_credentials_even_at_debug(tmp_path):
    from e2e_support import BridgeProcess, EmulatorProcess, client, goip_config, receive_deliver_sm, submit

    emulator = EmulatorProcess(lines=1, send_duration=0.05)
    bridge = BridgeProcess(tmp_path, goip_config(emulator.url, lines=1, extra="logging:\n  level: debug\n  format: json\n"))
    try:
        bridge.start()
        wrong = client(bridge.port)
        try:
            wrong.bind_transceiver(system_id="alice", password="guess123")
        except Exception:
            pass
        wrong.disconnect()
        c = client(bridge.port)
        c.bind_transceiver(system_id="alice", password="secret1")
        submit(c, b"hello", dest="+491701112233", registered_delivery=1)
        receive_deliver_sm(c, 1)
        c.unbind()
        c.disconnect()
    finally:
        bridge.stop()
        emulator.stop()
    text = bridge.log_text()
    assert "secret1" not in text and "guess123" not in text
    assert "p=admin" not in text and "u=admin" not in text  # the GoIP's credentials in its URLs
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(records) > 5 and {r["level"] for r in records} >= {"info", "warning"}
    assert any("bind refused" in r["msg"] for r in records)
    assert all(not line.strip() or line.startswith("{") or line.startswith("smpp-bridge ready") for line in text.splitlines())
