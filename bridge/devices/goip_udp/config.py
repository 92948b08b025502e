"""The YAML keys of a `goip_udp` device, their loader, and the driver built from them.

Errors name the key and its line (the `_Map` helpers of bridge/config.py do that).
"""

from __future__ import annotations

from typing import Any

from yaml.nodes import MappingNode

from bridge.config.devices import (
    BAD as _BAD,
    describe as _describe,
    DEVICE_PASSWORD_KEYS,
    host_problem as _host_problem,
    load_device_password as _load_device_password,
    Map as _Map,
    scalar_or_bad as _scalar_or_bad,
    Secret,
)
from bridge.devices.base import Driver, secret_text

#: Keys a `goip_udp` device takes besides the common ones (name, kind, timeouts, caps, channels).
KEYS = ("listen_host", "listen_port", "line_ids", *DEVICE_PASSWORD_KEYS, "keepalive_timeout", "resend_send")


def load(m: _Map) -> dict[str, Any]:
    """A GoIP whose SMS server is the bridge (UDP; docs/devices/goip.md, part 2)."""
    password = _load_device_password(m)
    if isinstance(password, Secret) and (";" in password.reveal() or any(c.isspace() for c in password.reveal())):
        m.fail("password", m.key_line("password"), "the GoIP SMS-server password cannot contain ';' or spaces")
        password = _BAD
    options: dict[str, Any] = {
        "listen_host": m.get_str("listen_host", "0.0.0.0", what="an address to listen on", check=_host_problem),
        "listen_port": m.get_int("listen_port", 44444, lo=1, hi=65535),
        "keepalive_timeout": m.get_number("keepalive_timeout", 92.0, exclusive=True, what="a number of seconds"),
        "resend_send": m.get_bool("resend_send", False),
    }
    lines: Any = _BAD
    node = m.node("line_ids")
    if node is None:
        m.missing("line_ids", 'a map of channel -> the line id set on the GoIP, like {1: gw1, 2: gw2}')
    elif not isinstance(node, MappingNode):
        m.fail("line_ids", node, 'expected a map of channel -> line id, like {1: gw1, 2: gw2}')
    else:
        ids: dict[str, str] = {}
        for key_node, value_node in node.value:
            key = str(_scalar_or_bad(m.ctx, key_node)).lstrip("0") or "0"
            value = _scalar_or_bad(m.ctx, value_node)
            if not isinstance(value, (str, int)) or not str(value) or ";" in str(value):
                m.fail("line_ids", value_node, f"expected a line id for channel {key}, got {_describe(value)}")
                continue
            ids[key] = str(value)
        expected = [str(i) for i in range(1, len(ids) + 1)]
        if ids and sorted(ids, key=lambda k: int(k) if k.isdigit() else 0) != expected:
            m.fail("line_ids", node, f"expected channels numbered 1..{len(ids)}, got {', '.join(sorted(ids))}")
        elif ids:
            lines = len(ids)
            options["line_ids"] = ids
        else:
            m.fail("line_ids", node, "expected at least one channel")
    return {"url": None, "username": "", "password": password, "lines": lines, "options": options}


def build_driver(device: Any) -> Driver:
    """The driver for one configured `goip_udp` device (``config.DeviceConfig``)."""
    from .driver import GoipUdpDriver

    opts = device.options
    return GoipUdpDriver(
        device.name,
        host=opts["listen_host"],
        port=opts["listen_port"],
        lines=dict(opts["line_ids"]),
        password=secret_text(device.password),
        keepalive_timeout=opts["keepalive_timeout"],
        resend_send=opts["resend_send"],
    )
