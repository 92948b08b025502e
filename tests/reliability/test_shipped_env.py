"""The allocator settings the soak benchmark measures with are the ones the bridge ships with.

The soak runs the bridge with ``MALLOC_ARENA_MAX=2`` because without it glibc's per-thread arenas
let memory creep up for hours; a unit or container without the setting would ship a bridge the
soak never measured.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from bench import soak

ROOT = Path(__file__).resolve().parents[2]


def _soak_default() -> str:
    default = inspect.signature(soak.run_soak).parameters["malloc_arena_max"].default
    assert default, "the soak no longer sets MALLOC_ARENA_MAX by default"
    return str(default)


def test_systemd_unit_sets_the_soaks_malloc_arena_max() -> None:
    unit = (ROOT / "packaging" / "smpp-bridge.service").read_text()
    service = unit.split("[Service]", 1)[1].split("\n[", 1)[0]
    values = re.findall(r"^Environment=MALLOC_ARENA_MAX=(\S+)$", service, re.M)
    assert values == [_soak_default()], values


def test_container_sets_the_soaks_malloc_arena_max() -> None:
    text = (ROOT / "packaging" / "Containerfile").read_text()
    # the ENV instruction of the final stage (continued lines joined)
    env = re.findall(r"^ENV ((?:.*\\\n)*.*)$", text, re.M)
    joined = " ".join(e.replace("\\\n", " ") for e in env)
    assert re.findall(r"MALLOC_ARENA_MAX=(\S+)", joined) == [_soak_default()], joined
