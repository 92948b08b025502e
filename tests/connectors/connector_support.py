"""Shared pieces of the connector tests: a connector config and an SMSC emulator."""

from __future__ import annotations

from typing import Any

from bridge.config import load_config_text


def connector_yaml(port: int, **extra: Any) -> str:
    lines = [
        "connectors:",
        "  - name: up1",
        "    host: 127.0.0.1",
        f"    port: {port}",
        "    system_id: bridge",
        "    password: secret",
    ]
    extra.setdefault("tls", "false")
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def connector_device(port: int, **extra: Any) -> Any:
    text = "esmes:\n  - system_id: app\n    password: secret12\n" + connector_yaml(port, **extra)
    return load_config_text(text).connectors[0]
