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

from .devices import _first_use, _list_section, _name_problem
from .model import Caps, DeviceConfig
from .reader import BAD, Map, _Ctx

_COMMON = ("name", "enabled", "status_timeout", "status_poll_interval", "health_interval", "inbox_poll_interval")


def _load_connector(ctx: _Ctx, node: Node, path: str) -> tuple[DeviceConfig | None, str | None, int | None]:
    before = len(ctx.issues)
    m = Map(ctx, node, path, (*_COMMON, *spec.KEYS), what="a connector (a mapping with name, host, system_id ...)")
    if not m.ok:
        return None, None, None
    name = m.get_str("name", None, what="a connector name", required=True, as_written=True,
                     check=_name_problem("connector"))
    fields = spec.load(m)

    def seconds(key: str, default: float) -> float:
        return m.get_number(key, default, exclusive=True, what="a number of seconds")

    # Receipts from an SMSC may take hours; the tracker follows them this long (then the
    # message counts as handed to the network, receipts.no_report decides its receipt).
    status_timeout = seconds("status_timeout", 172_800.0)
    status_poll_interval = seconds("status_poll_interval", 1.0)
    health_interval = seconds("health_interval", 5.0)
    inbox_poll_interval = seconds("inbox_poll_interval", 1.0)
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
        status_timeout=status_timeout,
        status_poll_interval=status_poll_interval,
        health_interval=health_interval,
        inbox_poll_interval=inbox_poll_interval,
        enabled=enabled,
        caps=Caps(per_minute=0, per_hour=0, per_day=0, jitter=0.0),  # pacing is the connector's
        **fields,
    )
    return device, name, line


def _load_connectors(ctx: _Ctx, node: Node | None, path: str) -> tuple[DeviceConfig, ...]:
    items = _list_section(
        ctx, node, path, "a list of connectors (may be empty)", "start each connector with '- name: ...'"
    )
    if items is None:
        return ()
    out: list[DeviceConfig] = []
    first_line: dict[str, int | None] = {}
    for i, item in enumerate(items):
        device, name, line = _load_connector(ctx, item, f"{path}[{i}]")
        if name is not None and name in ctx.devices:
            ctx.error(f"{path}[{i}].name", line, f"connector name {name!r} is already a device's name: routes name both, pick another")
            ctx.broken_devices.add(name)
            continue
        if not _first_use(ctx, first_line, name, line, f"{path}[{i}].name", "connector"):
            continue
        if device is None:
            if name is not None:
                ctx.broken_devices.add(name)
            continue
        ctx.devices[device.name] = device
        out.append(device)
    return tuple(out)


def connector_settings(device: Any) -> Any:
    return spec.settings_of(device)
