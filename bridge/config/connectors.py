"""The ``connectors`` section: upstream SMSCs the bridge binds to as an ESME.

Each item becomes a route target like a device (a ``DeviceConfig`` of kind ``smpp`` whose
channels are the slots of its ``window``); its own keys are read by bridge/connectors/config.py.
A connector and a device may not share a name: routes name both the same way.
"""

from __future__ import annotations

from typing import Any

from yaml.nodes import Node

from bridge.connectors import KIND
from bridge.connectors import config as spec

from .devices import name_problem, load_targets, load_timings
from .model import Caps, DeviceConfig
from .reader import BAD, Map, Ctx

CONNECTOR_TIMINGS = {
    "status_poll_interval": 1.0, "status_timeout": 172_800.0, "inbox_poll_interval": 1.0,
    "health_interval": 5.0,
}  # fmt: skip
_COMMON = ("name", "enabled", *CONNECTOR_TIMINGS)


def _load_connector(ctx: Ctx, node: Node, path: str) -> tuple[DeviceConfig | None, str | None, int | None]:
    before = len(ctx.issues)
    m = Map(ctx, node, path, (*_COMMON, *spec.KEYS), what="a connector (a mapping with name, host, system_id ...)")
    if not m.ok:
        return None, None, None
    name = m.get_str("name", None, what="a connector name", required=True, as_written=True,
                     check=name_problem("connector"))
    fields = spec.load(m)

    # Receipts from an SMSC may take hours: the tracker follows them status_timeout long (then
    # the message counts as handed to the network, receipts.no_report decides its receipt).
    timings = load_timings(m, CONNECTOR_TIMINGS)
    enabled = m.get_bool("enabled", True)
    m.finish()
    line = m.key_line("name")
    if name is BAD:
        return None, None, line
    if len(ctx.issues) > before or any(v is BAD for v in fields.values()):
        return None, name, line
    fields["options"] = {k: v for k, v in fields["options"].items() if k != "password"}
    device = DeviceConfig(
        name=name,
        kind=KIND,
        **timings,
        enabled=enabled,
        caps=Caps(per_minute=0, per_hour=0, per_day=0, jitter=0.0),  # pacing is the connector's
        **fields,
    )
    return device, name, line


def load_connectors(ctx: Ctx, node: Node | None, path: str) -> tuple[DeviceConfig, ...]:
    return load_targets(ctx, node, path, "connector", _load_connector)


def connector_settings(device: Any) -> Any:
    return spec.settings_of(device)
