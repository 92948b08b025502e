"""`default_demo_config`: a ready config for the demo and for tests, everything on loopback."""

from __future__ import annotations

from pathlib import Path

from .model import (
    AdminConfig,
    Caps,
    Config,
    DeviceConfig,
    EsmeConfig,
    Limits,
    Listener,
    LoggingConfig,
    LOOPBACK_NETWORKS,
    RouteConfig,
    Secret,
    SmppConfig,
    StoreConfig,
)

def default_demo_config(
    data_dir: Path,
    smpp_port: int = 2775,
    goip_url: str | None = None,
    goip_lines: int = 8,
    goip_password: str = "admin",
) -> Config:
    """A ready config for the demo and for tests: everything on loopback, one ESME demo/demo.

    With `goip_url`, also one GoIP (or its emulator) "goip1" with no sending caps and fast
    status polls, and a catch-all route "default" over all its lines (the demo ESME's
    default_route). Without it, the bridge only stores messages.
    """
    devices: tuple[DeviceConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    default_route = None
    if goip_url is not None:
        device = DeviceConfig(
            name="goip1",
            kind="goip_http",
            url=goip_url.rstrip("/"),
            username="admin",
            password=Secret(goip_password),
            lines=goip_lines,
            timeout=5.0,
            status_poll_interval=0.5,
            caps=Caps(per_minute=0),
        )
        devices = (device,)
        routes = (RouteConfig(name="default", channels=[("goip1", ch) for ch in device.channel_ids()]),)
        default_route = "default"
    return Config(
        smpp=SmppConfig(listeners=(Listener(host="127.0.0.1", port=smpp_port),)),
        esmes=(
            EsmeConfig(
                system_id="demo",
                password=Secret("demo"),
                allowed_ips=LOOPBACK_NETWORKS,
                max_binds=10,
                throughput=0.0,
                default_route=default_route,
            ),
        ),
        store=StoreConfig(path=Path(data_dir).absolute() / "bridge.sqlite3", synchronous="full"),
        limits=Limits(queue_depth=200_000),
        admin=AdminConfig(host="127.0.0.1", port=8025, token=None),
        logging=LoggingConfig(),
        devices=devices,
        routes=routes,
    )
