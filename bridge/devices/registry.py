"""The device kinds the bridge knows: one line per kind.

Each kind is one folder, ``bridge/devices/<kind>/``, with the same four pieces:

* ``__init__.py``: ``CAPABILITIES``, what the kind can do (a ``base.Capabilities``). The rest of
  the bridge reads this declaration and never tests a kind's name or probes a driver.
* ``config.py``: ``KEYS`` (the YAML keys the kind adds to a device), ``load(m)`` (reads and
  checks them; errors name the key and its line) and ``build_driver(device)``.
* ``driver.py``: the driver (``base.Driver``).
* ``emulator.py``: a server speaking the device's wire format, quirks included, for tests.

and a page ``docs/devices/<kind>.md`` (or a shared one named in ``DOCS``) describing its wire
format. Adding a kind = adding its folder and its line in ``KINDS``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .base import Capabilities, Driver

#: Every device kind, in the order error messages list them.
KINDS: tuple[str, ...] = (
    "goip_http",
    "goip_udp",
    "router",
    "brevis",
    "smsgateway24",
    "smsgate",
)

#: Route targets that are not devices but are driven the same way: an upstream SMSC connector
#: (configured under ``connectors:``, its package is bridge/connectors/).
CONNECTOR_KINDS: dict[str, str] = {"smpp": "bridge.connectors"}

#: Kinds whose wire format is described on a shared docs page (docs/devices/<page>.md).
DOCS: dict[str, str] = {"goip_http": "goip", "goip_udp": "goip"}


def _part(kind: str, part: str | None = None) -> ModuleType:
    if kind in CONNECTOR_KINDS:
        return importlib.import_module(CONNECTOR_KINDS[kind] + (f".{part}" if part else ""))
    if kind not in KINDS:
        raise KeyError(f"no device kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return importlib.import_module(f"bridge.devices.{kind}" + (f".{part}" if part else ""))


def capabilities(kind: str) -> Capabilities:
    """The declared capabilities of ``kind`` (the defaults for a kind not registered, such as a
    test's stand-in driver)."""
    if kind not in KINDS and kind not in CONNECTOR_KINDS:
        return Capabilities()
    return _part(kind).CAPABILITIES


def config(kind: str) -> ModuleType:
    """The kind's config module: ``KEYS``, ``load(m)``, ``build_driver(device)``."""
    return _part(kind, "config")


def emulator(kind: str) -> ModuleType:
    return _part(kind, "emulator")


def docs_page(kind: str) -> str:
    return f"docs/devices/{DOCS.get(kind, kind)}.md"


def build_driver(device: Any) -> Driver:
    """A driver for one configured device (``config.DeviceConfig``)."""
    if device.kind not in KINDS and device.kind not in CONNECTOR_KINDS:
        raise ValueError(f"device {device.name!r}: no driver for kind {device.kind!r}")
    return config(device.kind).build_driver(device)
