"""packaging/install.sh for real, into /, then the bridge as systemd would run it.

CI runs as root on a throwaway machine. There the installer runs for real (no ``--root``): the
venv in /opt/smpp-bridge, /etc/smpp-bridge, /var/lib/smpp-bridge, /usr/local/bin/smpp-bridge,
the unit in /etc/systemd/system and the `smpp-bridge` system user. That machine has no systemd
as PID 1, so the test does what systemd would do with the installed unit: it parses the unit
file and runs its ``ExecStartPre=`` and ``ExecStart=`` commands as its ``User=``/``Group=``, in
its ``WorkingDirectory=``, with its ``Environment=`` and with ``STATE_DIRECTORY`` set from its
``StateDirectory=`` (as systemd sets it), and the secrets file the command line names.

It only runs where that is safe: as root, without systemd running (the installer would enable
the unit), and only when none of the paths it installs nor the `smpp-bridge` user exist, unless
a marker says an earlier run of this test made them (then it removes those first). Afterwards it
removes everything it installed and the user.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from tests.e2e_support import READY_RE, KindEmulator, free_port, receive_deliver_sm

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "packaging" / "install.sh"
LOCK = ROOT / "packaging" / "requirements.lock"
USER = "smpp-bridge"
UNIT = Path("/etc/systemd/system/smpp-bridge.service")
#: Everything the installer creates (besides the user and its group).
INSTALLED = [Path("/opt/smpp-bridge"), Path("/etc/smpp-bridge"), Path("/var/lib/smpp-bridge"),
             Path("/usr/local/bin/smpp-bridge"), UNIT]
#: Written before the install: what exists while it exists was made by this test.
MARKER = Path("/var/tmp/smpp-bridge-install-test.marker")


def _exists(name: str, db: str) -> bool:
    try:
        (pwd.getpwnam if db == "passwd" else grp.getgrnam)(name)
        return True
    except KeyError:
        return False


def why_not_safe() -> str | None:
    if os.geteuid() != 0:
        return "the real install needs root (CI runs as root on a throwaway machine)"
    if not shutil.which("apt-get") or not shutil.which("useradd") or not shutil.which("userdel"):
        return "the installer is for Debian (apt-get, useradd, userdel)"
    if subprocess.run(["/usr/bin/python3", "-c", "import venv, ensurepip"], capture_output=True).returncode:
        return "/usr/bin/python3 with venv is needed"
    if Path("/run/systemd/system").is_dir():
        return "systemd runs here: a real install would enable a unit on this machine"
    if MARKER.exists():
        return None  # leftovers of an earlier run of this test: it removes them
    taken = [str(p) for p in INSTALLED if p.exists() or p.is_symlink()]
    taken += [f"user {USER}"] if _exists(USER, "passwd") else []
    taken += [f"group {USER}"] if _exists(USER, "group") else []
    if taken:
        return f"not installing over what this test did not make: {', '.join(taken)}"
    return None


def remove_installation() -> None:
    for p in INSTALLED:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    if _exists(USER, "passwd"):
        subprocess.run(["userdel", USER], check=True)
    if _exists(USER, "group"):
        subprocess.run(["groupdel", USER], check=True)
    MARKER.unlink(missing_ok=True)


@pytest.fixture
def fresh_machine():  # type: ignore[no-untyped-def]
    reason = why_not_safe()
    if reason:
        pytest.skip(reason)
    remove_installation()  # an earlier, interrupted run's (the marker says they are ours)
    MARKER.write_text("tests/ops/test_install.py installs smpp-bridge for real while this file exists\n")
    try:
        yield
    finally:
        remove_installation()


def install(*args: str) -> str:
    r = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=540,
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


class Unit:
    """The installed unit's [Service] section, read the way systemd reads what we use of it."""

    def __init__(self, path: Path):
        self.values: dict[str, list[str]] = {}
        section = None
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]":
                key, _, value = line.partition("=")
                self.values.setdefault(key.strip(), []).append(value.strip())

    def one(self, key: str) -> str:
        (value,) = self.values[key]
        return value

    def command(self, key: str) -> list[str]:
        return shlex.split(self.one(key))

    def environment(self) -> dict[str, str]:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        for value in self.values.get("Environment", []):
            env.update(item.split("=", 1) for item in shlex.split(value))
        assert "EnvironmentFile" not in self.values, "the bridge reads its secrets itself (--env-file)"
        env["STATE_DIRECTORY"] = f"/var/lib/{self.one('StateDirectory')}"
        return env

    def as_user(self, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
        """subprocess arguments for running as the unit's User/Group in its WorkingDirectory."""
        return dict(user=self.one("User"), group=self.one("Group"), extra_groups=[],
                    env=self.environment() if env is None else env, cwd=self.one("WorkingDirectory"),
                    umask=int(self.one("UMask"), 8))


def as_service_user(env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    """Like `sudo -u smpp-bridge ...` from /."""
    return dict(user=USER, group=USER, extra_groups=[], env=env, cwd="/")


@pytest.mark.slow
def test_real_install_runs_as_the_unit_says_then_upgrade_keeps_config_and_data(fresh_machine):
    out = install()
    etc, state = Path("/etc/smpp-bridge"), Path("/var/lib/smpp-bridge")
    venv = Path("/opt/smpp-bridge/venv")
    config, secrets = etc / "bridge.yaml", etc / "secrets.env"
    uid = pwd.getpwnam(USER).pw_uid
    assert "systemd is not running here" in out
    assert config.stat().st_mode & 0o777 == 0o600 and config.stat().st_uid == uid
    assert secrets.stat().st_mode & 0o777 == 0o640 and secrets.stat().st_uid == 0
    assert state.stat().st_mode & 0o777 == 0o700 and state.stat().st_uid == uid
    # The service user may read /etc/smpp-bridge, never write there.
    assert etc.stat().st_uid == 0 and etc.stat().st_mode & 0o777 == 0o750
    assert Path("/usr/local/bin/smpp-bridge").resolve() == venv / "bin/smpp-bridge"
    unit = Unit(UNIT)
    assert unit.one("User") == USER
    doc = re.search(r"^Documentation=file:(\S+)", UNIT.read_text(), re.M)
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
    # Nothing under /etc/smpp-bridge is the service user's to write, not even its own config:
    # the store's default (the state directory) must not need it.
    config.chmod(0o400)
    touch = subprocess.run(["touch", str(etc / "probe"), str(config)], capture_output=True, text=True,
                           **as_service_user({"PATH": "/usr/bin:/bin"}))
    assert touch.returncode != 0 and not (etc / "probe").exists(), touch.stderr

    # The README's command, as the service user: without the secrets file it says which option.
    program = "/usr/local/bin/smpp-bridge"
    sudo_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    r = subprocess.run([program, "check-config", str(config)], capture_output=True, text=True, timeout=60,
                       **as_service_user(sudo_env))
    assert r.returncode == 1 and "GOIP1_PASSWORD is not set" in r.stderr and "--env-file" in r.stderr
    r = subprocess.run([program, "check-config", "--env-file", str(secrets), str(config)], capture_output=True,
                       text=True, timeout=60, **as_service_user(sudo_env))
    assert r.returncode == 0 and r.stdout.strip() == f"{config}: OK", r.stderr
    # Had the store been pointed at /etc/smpp-bridge, check-config would say so, naming store.path.
    r = subprocess.run([program, "check-config", "--env-file", str(secrets), str(config)], capture_output=True,
                       text=True, timeout=60, **as_service_user({**sudo_env, "STATE_DIRECTORY": str(etc)}))
    assert r.returncode == 1 and "store.path" in r.stderr and f"cannot write in {etc}" in r.stderr, r.stderr

    # What systemd would do: ExecStartPre, then ExecStart, as User= with the unit's environment.
    r = subprocess.run(unit.command("ExecStartPre"), capture_output=True, text=True, timeout=60, **unit.as_user())
    assert r.returncode == 0, r.stderr
    bridge = subprocess.Popen(unit.command("ExecStart"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, **unit.as_user())
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
    assert db.stat().st_uid == uid and db.stat().st_mode & 0o077 == 0  # UMask=0077

    # Upgrade: a dependency drifted (here: removed); the installer puts back the locked one and
    # keeps the config, the secrets and the store.
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "uninstall", "-q", "-y", "sortedcontainers"], check=True)
    before = {p: p.read_bytes() for p in (config, secrets)}
    out = install()
    assert f"keeping existing {config}" in out and f"keeping existing {secrets}" in out
    assert {p: p.read_bytes() for p in (config, secrets)} == before
    assert venv_versions(venv)["sortedcontainers"] == locked_versions()["sortedcontainers"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    r = subprocess.run(unit.command("ExecStartPre"), capture_output=True, text=True, timeout=60, **unit.as_user())
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
