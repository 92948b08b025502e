"""Device drivers: one per kind of GSM hardware, all speaking the protocol in base.py.

``build_driver`` is the one place that maps a config ``kind`` to its driver class.
"""

from __future__ import annotations

from typing import Any

from .base import Driver


def _secret(value: Any) -> str:
    return value.reveal() if value is not None else ""


def build_driver(device: Any) -> Driver:
    """A driver for one configured device (``config.DeviceConfig``)."""
    opts = device.options
    if device.kind == "goip_http":
        from .goip_http.driver import GoipHttpDriver

        return GoipHttpDriver(
            device.name,
            device.url,
            device.username,
            _secret(device.password),
            device.lines,
            timeout=device.timeout,
            # Status polls of all lines share one request; a shared answer may be this old.
            # Small next to the poll interval, so a final status is seen within one interval.
            status_max_age=min(0.1, device.status_poll_interval / 4),
        )
    if device.kind == "goip_udp":
        from .goip_udp.driver import GoipUdpDriver

        return GoipUdpDriver(
            device.name,
            host=opts["listen_host"],
            port=opts["listen_port"],
            lines=dict(opts["line_ids"]),
            password=_secret(device.password),
            keepalive_timeout=opts["keepalive_timeout"],
            resend_send=opts["resend_send"],
        )
    if device.kind == "router":
        from .router.driver import RouterDriver

        return RouterDriver(
            device.name,
            device.url,
            device.username,
            _secret(device.password),
            method=opts["method"],
            timeout=device.timeout,
            modem=opts.get("modem"),
            verify_tls=opts["verify_tls"],
        )
    if device.kind == "brevis":
        from .brevis.driver import BrevisDriver

        return BrevisDriver(
            device.name,
            device.url,
            device.username,
            _secret(device.password),
            method=opts["method"],
            timeout=device.timeout,
            verify_tls=opts["verify_tls"],
            hexmode=opts["hexmode"],
        )
    if device.kind == "smsgateway24":
        from .smsgateway24.driver import SmsGateway24Driver

        return SmsGateway24Driver(
            device.name,
            device.url,
            device.username,
            _secret(device.password),
            opts["device_id"],
            sims=device.lines,
            timeout=device.timeout,
            offline_after=opts["offline_after"],
            verify_tls=opts["verify_tls"],
        )
    if device.kind == "smsgate":
        from .smsgate.driver import SmsGateDriver

        secret = opts.get("webhook_secret")
        return SmsGateDriver(
            device.name,
            device.url,
            device.username,
            _secret(device.password),
            sims=device.lines,
            with_delivery_report=opts["with_delivery_report"],
            timeout=device.timeout,
            webhook_secret=secret.reveal() if secret is not None else None,
            verify_tls=opts["verify_tls"],
        )
    raise ValueError(f"device {device.name!r}: no driver for kind {device.kind!r}")
