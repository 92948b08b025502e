"""The ``store`` section, and where the SQLite store lives when the config does not say."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from yaml.nodes import Node

from .model import Config, StoreConfig, SYNCHRONOUS_MODES
from .reader import ConfigIssue, Ctx, Map

def load_store(ctx: Ctx, node: Node | None, path: str) -> StoreConfig:
    m = Map(ctx, node, path, ("path", "synchronous", "partial_timeout"))
    config = StoreConfig(
        path=m.get_path("path", default_store_path(ctx.env, ctx.base_dir), what="a database file path"),
        synchronous=m.get_choice("synchronous", "full", SYNCHRONOUS_MODES),
        partial_timeout=m.get_number("partial_timeout", 600.0, exclusive=True, what="a number of seconds"),
    )
    m.finish()
    return config


SYSTEM_STATE_DIR = Path("/var/lib/smpp-bridge")
STORE_FILE = "bridge.sqlite3"


def default_store_path(env: Mapping[str, str], config_dir: Path) -> Path:
    """Where the database goes when ``store.path`` is not set, in this order:

    1. ``$STATE_DIRECTORY/bridge.sqlite3``: systemd sets it from the unit's ``StateDirectory=``
       (the first one, when it lists several); the container image sets it to its volume.
    2. ``/var/lib/smpp-bridge/bridge.sqlite3`` for a config kept under ``/etc`` (the installed
       appliance: the same place whether systemd or ``sudo -u smpp-bridge`` runs the command).
    3. ``data/bridge.sqlite3`` next to the config file otherwise (a config in a person's own
       directory: the demo, tests, a trial run).
    """
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / STORE_FILE
    if config_dir == Path("/etc") or Path("/etc") in config_dir.parents:
        return SYSTEM_STATE_DIR / STORE_FILE
    return config_dir / "data" / STORE_FILE


def store_location_issues(config: Config) -> list[ConfigIssue]:
    """Can this process create and write the database at ``store.path``? (check-config and run
    ask before anything opens it: a read-only directory otherwise surfaces as a bare
    ``Read-only file system`` at the first write.)"""
    path = config.store.path
    where = f"the database {path} (store.path, or its default when not set)"
    fix = "set store.path to a file in a directory the bridge's user can write (e.g. /var/lib/smpp-bridge)"
    if path.is_dir():
        return [ConfigIssue("store.path", None, f"{where} is a directory; expected a database file path")]
    for item in [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]:
        if item.exists() and not os.access(item, os.R_OK | os.W_OK):
            return [ConfigIssue("store.path", None, f"{item} exists but this user cannot read and write it; "
                                "run as the bridge's user or fix its owner")]
    # The directory (or the nearest one that exists: the store creates the rest) must be
    # writable, for the database and for SQLite's journal files beside it.
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [ConfigIssue("store.path", None, f"{where}: {parent} is not a directory; {fix}")]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [ConfigIssue("store.path", None, f"{where}: cannot write in {parent}; {fix}")]
    try:
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".smpp-bridge-write-test-")
        probe.close()
    except OSError as e:  # a read-only mount: os.access does not see it
        return [ConfigIssue("store.path", None, f"{where}: cannot write in {parent} ({e.strerror}); {fix}")]
    return []
