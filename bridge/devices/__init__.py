"""Device drivers: one per kind of GSM hardware, all speaking the protocol in base.py.

``build_driver`` is the one place that maps a config ``kind`` to its driver class.
"""

from __future__ import annotations

from typing import Any

from .base import Driver


def build_driver(device: Any) -> Driver:
    """A driver for one configured device (``config.DeviceConfig``)."""
    if device.kind == "goip_http":
        from .goip_http import GoipHttpDriver

        return GoipHttpDriver(
            device.name,
            device.url,
            device.username,
            device.password.reveal() if device.password is not None else "",
            device.lines,
            timeout=device.timeout,
            # Status polls of all lines share one request; a shared answer may be this old.
            # Small next to the poll interval, so a final status is seen within one interval.
            status_max_age=min(0.1, device.status_poll_interval / 4),
        )
    raise ValueError(f"device {device.name!r}: no driver for kind {device.kind!r}")
