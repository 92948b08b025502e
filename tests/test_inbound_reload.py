"""A config reload reaches inbound: the MO form (esmes[].mo_long), routes and the destination.

In-process: reload_config() runs against a small stand-in for the app, with the real Inbound
service and a real store.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bridge.config import load_config
from bridge.inbound import Inbound
from bridge.metrics import Metrics
from bridge.reload import reload_config
from bridge.smpp.constants import Tag
from bridge.store import MoMessage, Store

CONFIG = """
esmes:
  - system_id: app1
    password: secret1
    mo_long: {mo_long}
devices:
  - name: goip1
    kind: goip_http
    url: http://127.0.0.1:1
    password: pw
    lines: 2
inbound:
  default_esme: app1
"""


class FakeServer:
    def __init__(self) -> None:
        self.binds: dict[str, list[object]] = {}
        self.config = None

    def update_config(self, config) -> None:  # type: ignore[no-untyped-def]
        self.config = config


@pytest.fixture
async def store(tmp_path, nursery):
    s = Store(tmp_path / "b.sqlite3")
    s.open()
    await nursery.start(s.run)
    yield s
    s.close()


def app_for(path, store):  # type: ignore[no-untyped-def]
    config = load_config(path)
    metrics = Metrics()
    return SimpleNamespace(
        config_path=path, config=config, metrics=metrics, server=FakeServer(),
        dispatcher=SimpleNamespace(config=config), monitor=SimpleNamespace(init_series=lambda c: None),
        scheduler=None, inbound=Inbound(config, store, {}, metrics),
    )  # fmt: skip


def long_mo() -> MoMessage:
    return MoMessage(id=7, device="goip1", channel="1", sender="+491701234567", recipient=None,
                     text="z" * 400, received_at=0.0, esme="app1")  # fmt: skip


async def test_mo_long_changed_by_a_reload_applies_to_the_next_mo(tmp_path, store):
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG.format(mo_long="udh"))
    path.chmod(0o600)
    app = app_for(path, store)
    assert len(app.inbound.policy.rows(long_mo())) == 3  # three UDH parts
    path.write_text(CONFIG.format(mo_long="payload"))
    result = await reload_config(app)
    assert result["ok"], result
    rows = app.inbound.policy.rows(long_mo())
    assert len(rows) == 1
    assert str(int(Tag.MESSAGE_PAYLOAD)) in json.loads(rows[0][0])["tlvs"]
    assert "esmes" in result["applied"]
