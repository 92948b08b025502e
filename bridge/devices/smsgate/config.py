"""The YAML keys of a `smsgate` device, their loader, and the driver built from them.

Errors name the key and its line (the `_Map` helpers of bridge/config.py do that).
"""

from __future__ import annotations

from typing import Any

from bridge.config.devices import (
    DEVICE_PASSWORD_KEYS,
    device_password_problem as _device_password_problem,
    device_url_problem as _device_url_problem,
    load_http_device as _load_http_device,
    Map as _Map,
    read_secret as _read_secret,
    tls_options as _tls_options,
)
from bridge.devices.base import Driver, secret_text

_WEBHOOK_SECRET_KEYS = ("webhook_secret", "webhook_secret_env", "webhook_secret_file")


#: Keys a `smsgate` device takes besides the common ones (name, kind, timeouts, caps, channels).
KEYS = (
    "url", "username", *DEVICE_PASSWORD_KEYS, "sims", "with_delivery_report", *_WEBHOOK_SECRET_KEYS,
    "register_webhooks", "webhook_url", "verify_tls", "ca_file",
)


def load(m: _Map) -> dict[str, Any]:
    """An Android phone running SMSGate (android-sms-gateway) in local server mode
    (docs/devices/smsgate.md)."""
    fields = _load_http_device(m, "phone", default_username="sms")
    sims = m.get_int("sims", 1, lo=1, hi=3)
    secret, _ = _read_secret(m, _WEBHOOK_SECRET_KEYS, check=_device_password_problem,
                             alternatives="webhook_secret_env or webhook_secret_file")
    options: dict[str, Any] = {
        "with_delivery_report": m.get_bool("with_delivery_report", True),
        "register_webhooks": m.get_bool("register_webhooks", False),
        "webhook_secret": secret,
        **_tls_options(m),
    }
    if m.has("webhook_url"):
        options["webhook_url"] = m.get_str("webhook_url", None, what="the URL the phone calls",
                                           check=_device_url_problem)
    if options["register_webhooks"] and "webhook_url" not in options:
        m.missing("webhook_url", "the bridge's webhook URL as the phone reaches it, like "
                  "https://bridge.lan:8025/webhooks/smsgate/<device name>")
    return {**fields, "lines": sims, "options": options}


def build_driver(device: Any) -> Driver:
    """The driver for one configured `smsgate` device (``config.DeviceConfig``)."""
    from .driver import SmsGateDriver

    opts = device.options
    secret = opts.get("webhook_secret")
    return SmsGateDriver(
        device.name,
        device.url,
        device.username,
        secret_text(device.password),
        sims=device.lines,
        with_delivery_report=opts["with_delivery_report"],
        timeout=device.timeout,
        webhook_secret=secret.reveal() if secret is not None else None,
        verify_tls=opts["verify_tls"],
    )
