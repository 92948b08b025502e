"""packaging/install.sh for real, then the README's operator commands as the service user.

CI runs as root on a throwaway machine without systemd. The installer runs with ``--root`` (a
fresh directory standing in for /: the venv, /etc/smpp-bridge, /var/lib/smpp-bridge, the unit)
so a developer's machine keeps its own /etc; the service user `smpp-bridge` is created for real.
The bridge then runs as that user with the installed config and its secrets file, and
STATE_DIRECTORY set as systemd sets it from the unit's StateDirectory=.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.e2e_support import READY_RE, KindEmulator, free_port, receive_deliver_sm, wait_for

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "packaging" / "install.sh"
LOCK = ROOT / "packaging" / "requirements.lock"
USER = "smpp-bridge"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("apt-get") or not shutil.which("useradd")
    or subprocess.run(["/usr/bin/python3", "-c", "import venv, ensurepip"], capture_output=True).returncode != 0,
    reason="the installer needs root, apt-get, useradd and /usr/bin/python3 with venv (Debian)",
)


def as_service_user(argv: list[str], env: dict[str, str], **kw):  # type: ignore[no-untyped-def]
    """Like `sudo -u smpp-bridge ...` (no PAM session needed)."""
    return dict(user=USER, group=USER, extra_groups=[], env=env, cwd="/", **kw)


@pytest.fixture(scope="module")
def site():  # type: ignore[no-untyped-def]
    root = Path(tempfile.mkdtemp(prefix="smpp-bridge-install-", dir="/tmp"))
    root.chmod(0o755)  # the service user walks through it, as through /
    yield root
    shutil.rmtree(root, ignore_errors=True)


def install(root: Path) -> str:
    r = subprocess.run(["bash", str(INSTALL), "--root", str(root)], capture_output=True, text=True, timeout=540,
                       env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def locked_versions() -> dict[str, str]:
    return {m.group(1).lower().replace("_", "-"): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), re.M)}


def venv_versions(venv: Path) -> dict[str, str]:
    out = subprocess.run([str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze",
                          "--disable-pip-version-check"], capture_output=True, text=True, check=True).stdout
    return {n.lower().replace("_", "-"): v for n, _, v in (line.partition("==") for line in out.split())}


@pytest.mark.slow
def test_install_run_as_the_service_user_then_upgrade_keeps_config_and_data(site):
    out = install(site)
    etc, state = site / "etc/smpp-bridge", site / "var/lib/smpp-bridge"
    venv = site / "opt/smpp-bridge/venv"
    program = str(venv / "bin/smpp-bridge")
    config, secrets = etc / "bridge.yaml", etc / "secrets.env"
    uid = pwd.getpwnam(USER).pw_uid
    assert "systemd left alone" in out
    assert config.stat().st_mode & 0o777 == 0o600 and config.stat().st_uid == uid
    assert secrets.stat().st_mode & 0o777 == 0o640 and secrets.stat().st_uid == 0
    assert state.stat().st_mode & 0o777 == 0o700 and state.stat().st_uid == uid
    # The service user may read /etc/smpp-bridge, never write there.
    assert etc.stat().st_uid == 0 and etc.stat().st_mode & 0o777 == 0o750
    assert (site / "usr/local/bin/smpp-bridge").resolve() == Path(program)
    unit = (site / "etc/systemd/system/smpp-bridge.service").read_text()
    assert f"--env-file {etc}/secrets.env" in unit
    doc = re.search(r"^Documentation=file:(\S+)", unit, re.M)
    assert doc and Path(doc.group(1)).is_file()
    assert venv_versions(venv).items() >= locked_versions().items() - {("setuptools", locked_versions()["setuptools"])}

    # The operator fills in the secrets and points the example at the (emulated) GoIP.
    token = "0123456789abcdef0123456789abcdef"
    secrets.write_text(secrets.read_text() + f"APP1_PASSWORD=app1pw\nGOIP1_PASSWORD=admin\nSMPP_BRIDGE_ADMIN_TOKEN={token}\n")
    emulator = KindEmulator("goip", "--send-duration", "0.2")
    smpp_port, admin_port = free_port(), free_port()
    text = config.read_text()
    text = text.replace("port: 2775", f"port: {smpp_port}").replace("port: 8025", f"port: {admin_port}")
    text = text.replace("url: http://192.168.1.50", f"url: {emulator.url}")
    text = text.replace("  # token_env: SMPP_BRIDGE_ADMIN_TOKEN", "  token_env: SMPP_BRIDGE_ADMIN_TOKEN")
    config.write_text(text)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "STATE_DIRECTORY": str(state)}

    # check-config as the service user: the secrets come from the file the unit uses.
    r = subprocess.run([program, "check-config", str(config)], capture_output=True, text=True, timeout=60,
                       **as_service_user([], env))
    assert r.returncode == 1 and "GOIP1_PASSWORD is not set" in r.stderr and "--env-file" in r.stderr
    r = subprocess.run([program, "check-config", "--env-file", str(secrets), str(config)], capture_output=True,
                       text=True, timeout=60, **as_service_user([], env))
    assert r.returncode == 0 and r.stdout.strip() == f"{config}: OK", r.stderr
    # Without the state directory the default is next to this config (not under /etc here),
    # where the service user cannot write: check-config says so, naming store.path.
    r = subprocess.run([program, "check-config", "--env-file", str(secrets), str(config)], capture_output=True,
                       text=True, timeout=60, **as_service_user([], {**env, "STATE_DIRECTORY": ""}))
    assert r.returncode == 1 and "store.path" in r.stderr and f"cannot write in {etc}" in r.stderr

    bridge = subprocess.Popen([program, "run", "--config", str(config), "--env-file", str(secrets)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              **as_service_user([], env))
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert bridge.stdout is not None
        for line in bridge.stdout:
            lines.append(line)
            if READY_RE.search(line):
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(30) and bridge.poll() is None, "".join(lines)
        import smpplib.client

        c = smpplib.client.Client("127.0.0.1", smpp_port, timeout=10)
        c.connect()
        c.bind_transceiver(system_id="app1", password="app1pw")
        c.send_message(source_addr="shop", destination_addr="+4915550001", short_message=b"hello",
                       registered_delivery=1)
        (receipt,) = receive_deliver_sm(c, 1, timeout=30)
        assert b"stat:DELIVRD" in receipt.short_message
        assert [m["destination"] for m in emulator.sent()] == ["+4915550001"]
        c.unbind()
        c.disconnect()

        # status, as the README says, right after: the message is counted.
        status = [program, "status", "--config", str(config), "--env-file", str(secrets)]
        r = subprocess.run(status, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert re.search(r"messages by state: .*delivered 1", r.stdout), r.stdout
        # status --json | head: the reader goes away; no traceback.
        p = subprocess.Popen([*status, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout is not None
        p.stdout.close()
        _, err = p.communicate(timeout=60)
        assert b"Traceback" not in err and p.returncode == 141, err
        ready_check = subprocess.run([program, "status", "--ready", "--config", str(config)],
                                     capture_output=True, text=True, timeout=60)
        assert ready_check.returncode == 0 and ready_check.stdout.strip() == "ready"
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        emulator.stop()
    assert bridge.returncode == 0, "".join(lines)
    db = state / "bridge.sqlite3"
    assert db.exists() and not (etc / "data").exists()

    # Upgrade: a dependency drifted (here: removed); the installer puts back the locked one and
    # keeps the config, the secrets and the store.
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "uninstall", "-q", "-y", "sortedcontainers"], check=True)
    before = {p: p.read_bytes() for p in (config, secrets)}
    out = install(site)
    assert f"keeping existing {config}" in out and f"keeping existing {secrets}" in out
    assert {p: p.read_bytes() for p in (config, secrets)} == before
    assert venv_versions(venv)["sortedcontainers"] == locked_versions()["sortedcontainers"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    r = subprocess.run([program, "check-config", "--env-file", str(secrets), str(config)], capture_output=True,
                       text=True, timeout=60, **as_service_user([], env))
    assert r.returncode == 0, r.stderr


def test_installer_without_systemd_says_how_to_start_by_hand(tmp_path):
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here")
    r = subprocess.run(["bash", str(INSTALL), "--dry-run", "--prefix", str(tmp_path / "opt")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "systemd is not running here" in r.stdout and "systemctl enable --now smpp-bridge" in r.stdout
    assert f"{tmp_path}/opt/venv/bin/smpp-bridge run --config /etc/smpp-bridge/bridge.yaml --env-file" in r.stdout
    assert "+ systemctl" not in r.stdout
