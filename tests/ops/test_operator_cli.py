"""The operator's commands: where the store goes, --env-file, clear stops, and the rough edges a
person meets at a terminal (README: "Install on a Raspberry Pi", "Commands", "Logs")."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from bridge import acceptance, cli, inbound, logs
from e2e_support import free_port, wait_for
from bridge.config import default_store_path, load_config_text, store_location_issues

ROOT = Path(__file__).resolve().parents[2]
# The least a config needs: one ESME (with a hashed password: no secret to supply).
MINIMAL = ("esmes:\n  - system_id: app1\n    password_hash: "
           "\"pbkdf2_sha256$12000$3y687dLBsL8LkTkouGjaFw==$OZzMBsbniNg/ghDiuPRUqkZ3c4tyytfiFhiQh9Z+JMg=\"\n")

CONFIG = """\
esmes:
  - system_id: app1
    password_env: APP1_PASSWORD
admin:
  host: 127.0.0.1
  port: {admin_port}
  token_env: ADMIN_TOKEN
smpp:
  listeners:
    - host: 127.0.0.1
      port: {smpp_port}
"""


def write_config(tmp_path: Path, smpp_port: int = 0, admin_port: int = 0, extra: str = "") -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG.format(smpp_port=smpp_port, admin_port=admin_port) + extra)
    path.chmod(0o600)
    return path


def write_env(tmp_path: Path, text: str = "APP1_PASSWORD=s3cret\nADMIN_TOKEN='0123456789abcdef0123'\n") -> Path:
    path = tmp_path / "secrets.env"
    path.write_text("# secrets\n\n" + text)
    path.chmod(0o640)
    return path


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private os.environ: --env-file writes into it."""
    env = {k: v for k, v in os.environ.items() if k not in ("APP1_PASSWORD", "ADMIN_TOKEN", "STATE_DIRECTORY")}
    monkeypatch.setattr(os, "environ", env)
    return env


# -- where the store goes without store.path ----------------------------------------------------


def test_store_default_is_the_state_directory_not_the_config_directory(tmp_path):
    etc = Path("/etc/smpp-bridge")
    assert default_store_path({"STATE_DIRECTORY": "/var/lib/smpp-bridge"}, etc) == Path(
        "/var/lib/smpp-bridge/bridge.sqlite3")
    assert default_store_path({"STATE_DIRECTORY": "/srv/a:/srv/b"}, tmp_path) == Path("/srv/a/bridge.sqlite3")
    # sudo -u smpp-bridge smpp-bridge ...: no systemd, same place.
    assert default_store_path({}, etc) == Path("/var/lib/smpp-bridge/bridge.sqlite3")
    # A config in a person's own directory (demo, tests, a trial): next to it.
    assert default_store_path({}, tmp_path) == tmp_path / "data" / "bridge.sqlite3"
    cfg = load_config_text(MINIMAL, env={"STATE_DIRECTORY": str(tmp_path / "state")}, base_dir=etc)
    assert cfg.store.path == tmp_path / "state" / "bridge.sqlite3"
    cfg = load_config_text(MINIMAL, env={}, base_dir=etc)
    assert cfg.store.path == Path("/var/lib/smpp-bridge/bridge.sqlite3")


def test_check_config_catches_a_store_path_that_is_not_a_directory(tmp_path, environ, capsys):
    (tmp_path / "afile").write_text("")
    cfg = write_config(tmp_path, extra=f"store:\n  path: {tmp_path}/afile/db.sqlite3\n")
    assert cli.main(["check-config", "--env-file", str(write_env(tmp_path)), str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "store.path" in err and f"{tmp_path}/afile is not a directory" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere: tests/ops/test_install.py checks this "
                    "as the service user")
def test_check_config_catches_an_unwritable_store_directory(tmp_path, environ, capsys):
    site = tmp_path / "site"
    site.mkdir()
    cfg = site / "bridge.yaml"
    cfg.write_text(MINIMAL)
    site.chmod(0o555)
    try:
        assert cli.main(["check-config", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert "store.path" in err and f"cannot write in {site}" in err
    finally:
        site.chmod(0o755)


def test_store_location_is_fine_where_the_user_can_write(tmp_path):
    cfg = load_config_text(MINIMAL, env={}, base_dir=tmp_path)
    assert store_location_issues(cfg) == []  # data/ does not exist yet: the store creates it


# -- --env-file ---------------------------------------------------------------------------------


def test_check_config_reads_the_secrets_file_the_unit_uses(tmp_path, environ, capsys):
    cfg = write_config(tmp_path)
    assert cli.main(["check-config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "APP1_PASSWORD is not set" in err and "--env-file /etc/smpp-bridge/secrets.env" in err
    assert cli.main(["check-config", "--env-file", str(write_env(tmp_path)), str(cfg)]) == 0
    assert capsys.readouterr().out.strip() == f"{cfg}: OK"
    assert environ["ADMIN_TOKEN"] == "0123456789abcdef0123"  # quotes taken off, as systemd does


def test_env_file_errors_name_the_line_and_refuse_a_world_readable_file(tmp_path, environ, capsys):
    cfg = write_config(tmp_path)
    bad = write_env(tmp_path, "APP1_PASSWORD=x\nthis is not a variable\n")
    assert cli.main(["check-config", "--env-file", str(bad), str(cfg)]) == 1
    assert f"{bad}:4: expected NAME=value" in capsys.readouterr().err
    good = write_env(tmp_path)
    good.chmod(0o644)
    assert cli.main(["run", "--config", str(cfg), "--env-file", str(good)]) == 2
    assert "can be read by every user" in capsys.readouterr().err
    assert cli.main(["check-config", "--env-file", str(tmp_path / "missing.env"), str(cfg)]) == 1
    assert "cannot read the environment file" in capsys.readouterr().err


def test_status_needs_only_the_admin_section(tmp_path, environ):
    # The ESMEs' secrets are not in this environment: status does not need them.
    cfg = write_config(tmp_path, admin_port=8099)
    args = cli.build_parser().parse_args(["status", "--config", str(cfg), "--env-file", str(write_env(
        tmp_path, "ADMIN_TOKEN=0123456789abcdef0123\n"))])
    assert cli._apply_env_file(args)
    assert cli._admin_target(args) == ("http://127.0.0.1:8099", "0123456789abcdef0123")


# -- a port already in use ----------------------------------------------------------------------


@pytest.fixture
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_run_names_the_busy_port_and_the_key_that_sets_it(tmp_path, environ, capsys, busy_port):
    cfg = write_config(tmp_path, smpp_port=busy_port)
    assert cli.main(["run", "--config", str(cfg), "--env-file", str(write_env(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert f"port {busy_port} (SMPP on 127.0.0.1) is already in use" in err
    assert f"smpp.listeners[0].port in {cfg}" in err


def test_demo_names_the_busy_port_and_the_option_that_changes_it(tmp_path, capsys, busy_port, restore_logging):
    argv = ["demo", "--smpp-port", str(busy_port), "--admin-port", "0", "--data-dir", str(tmp_path),
            "--log-level", "error"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"port {busy_port} (SMPP on 127.0.0.1) is already in use" in err and "--smpp-port" in err


@pytest.fixture
def restore_logging():
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# -- Ctrl-C, the demo banner's example ----------------------------------------------------------


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def start_and_wait(argv: list[str], ready: str, timeout: float = 30.0) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    lines: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if ready in line:
                seen.set()
        seen.set()

    threading.Thread(target=pump, daemon=True).start()
    if not seen.wait(timeout) or not any(ready in x for x in lines):
        proc.kill()
        raise AssertionError("did not start:\n" + "".join(lines) + (proc.stderr.read() if proc.stderr else ""))
    return proc, lines


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def test_ctrl_c_on_an_emulator_stops_it_without_a_traceback():
    proc, _ = start_and_wait(["emulate", "goip", "--port", "0"], "emulator ready")
    code, err = interrupt(proc)
    assert code == 0 and "Traceback" not in err and "ExceptionGroup" not in err, err


def test_the_demo_banner_example_runs_as_printed_and_ends(tmp_path):
    pytest.importorskip("smpplib")
    proc, lines = start_and_wait(["demo", "--smpp-port", "0", "--admin-port", "0", "--data-dir", str(tmp_path),
                                  "--log-level", "warning"], "Ctrl-C stops it.")
    try:
        banner = "".join(lines)
        block = banner.split("as a script:\n", 1)[1]
        code = textwrap.dedent("".join(re.findall(r"^(    .*\n)", block, re.M)))
        assert "c.listen()" not in code  # it blocks forever
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert re.search(r"accepted as \S+", r.stdout) and re.search(r"receipt: id:\S+ .*stat:DELIVRD", r.stdout), \
            r.stdout + r.stderr
    finally:
        code_, err = interrupt(proc)
    assert code_ == 0 and "Traceback" not in err, err


# -- hash-password, masking, help ---------------------------------------------------------------


def test_hash_password_asks_twice_and_refuses_two_different_answers(monkeypatch, capsys):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    answers = iter(["first secret", "another secret"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": next(answers))
    assert cli.main(["hash-password"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "differ" in captured.err
    answers = iter(["s3cret", "s3cret"])
    assert cli.main(["hash-password"]) == 0
    from bridge.passwords import verify_password

    assert verify_password(capsys.readouterr().out.strip(), "s3cret")


def test_one_masking_of_phone_numbers_everywhere_and_in_the_readme():
    for mask in (logs.mask_number, acceptance.mask_number, inbound.mask_number):
        assert mask("+4915550001") == "+4915******"
        assert mask("4915550001") == "4915******"
        assert mask("004915550001") == "004915******"
    assert logs.mask_numbers("to +4915550001 now") == "to +4915****** now"
    readme = (ROOT / "README.md").read_text()
    assert "`+4915550001` appears as `+4915******`" in readme


def test_every_subcommand_argument_says_what_it_is():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    missing = [f"{name} {a.dest}" for name, p in sub.choices.items() for a in p._actions
               if a.help is None and a.dest != "help"]
    assert missing == []


def test_the_demo_banner_curl_line_sends_through_the_http_api(tmp_path):
    proc, lines = start_and_wait(["demo", "--smpp-port", "0", "--admin-port", str(free_port()),
                                  "--data-dir", str(tmp_path), "--log-level", "warning"], "Ctrl-C stops it.")
    try:
        (curl,) = [line.strip() for line in lines if line.strip().startswith("curl -u demo:demo")]
        r = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
        answer = json.loads(r.stdout)
        (msg,) = answer["messages"]
        assert msg["to"] == "+15550001" and msg["parts"] == 1
        url = curl.rsplit(" ", 1)[1]
        wait_for(lambda: httpx.get(f"{url}/{msg['id']}", auth=("demo", "demo")).json()["state"] == "delivered",
                 timeout=20)
    finally:
        code_, err = interrupt(proc)
    assert code_ == 0 and "Traceback" not in err, err
