"""The connectors config section and the submit_sm bodies of one message."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import ConfigError, load_config_text
from bridge.connectors.submit import address, build_submits
from bridge.smpp.concat import parse_udh
from bridge.smpp.constants import Tag
from bridge.smpp.text import decode_short_message

BASE = """
esmes:
  - system_id: app
    password: secret12
connectors:
  - name: up1
    host: smpp.example.net
    system_id: bridge
    password_env: UP_PW
{extra}
routes:
  - name: upstream
    channels: [up1]
"""


def load(extra: str = "", env: dict | None = None):  # type: ignore[no-untyped-def]
    return load_config_text(BASE.format(extra=extra), env={"UP_PW": "pw"} if env is None else env)


def errors(extra: str, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        load(extra, env)
    return str(e.value)


def test_defaults_are_secure_and_routes_name_the_connector() -> None:
    c = load()
    [up] = c.connectors
    assert up.kind == "smpp" and up.lines == 10  # the window's slots are its channels
    assert up.options["tls"] is True and up.options["verify_tls"] is True  # TLS unless opted out
    assert c.routes[0].channels[0] == ("up1", "1")
    assert up in c.devices
    assert "pw" not in repr(c)  # the password never shows


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    window: 0", "connectors[0].window: expected an integer from 1 to 1000, got 0"),
        ("    binds: {tx: 0, trx: 0, rx: 1}", "expected at least one tx or trx bind"),
        ("    encoding: utf8", "connectors[0].encoding: expected one of 'gsm7', '8bit', got 'utf8'"),
        ("    interface_version: 4.0", "expected one of '3.3', '3.4', '5.0', got '4.0'"),
        ("    long: split", "expected one of 'udh', 'sar', 'payload'"),
        ("    source_ton_npi: [1]", 'expected "auto" or [ton, npi] like [1, 1]'),
        ("    pasword: x", "pasword"),
        ("    port: 70000", "connectors[0].port"),
        ('    interface_version: "3.3"\n    long: sar', "long: sar needs TLVs, which SMPP 3.3 does not carry"),
    ],
)
def test_clear_errors(extra: str, message: str) -> None:
    assert message in errors(extra)


def test_missing_secret_and_name_clash() -> None:
    assert "environment variable UP_PW is not set" in errors("", env={})
    text = BASE.format(extra="").replace("connectors:", "devices:\n  - name: up1\n    kind: router\n    url: http://10.0.0.1\n    password: x\nconnectors:")
    with pytest.raises(ConfigError) as e:
        load_config_text(text, env={"UP_PW": "pw"})
    assert "connector name 'up1' is already a device's name" in str(e.value)


def test_interface_version_unquoted_and_fixed_ton_npi() -> None:
    c = load("    interface_version: 3.3\n    source_ton_npi: [5, 0]\n    tls: false")
    opts = c.connectors[0].options
    assert opts["version"] == "3.3" and opts["source_ton_npi"] == (5, 0) and opts["tls"] is False


def test_addresses_auto() -> None:
    assert address("+4917012345", None) == (1, 1, "4917012345")
    assert address("12345", None) == (0, 1, "12345")
    assert address("MyShop", None) == (5, 0, "MyShop")
    assert address("+49", (2, 9)) == (2, 9, "+49")


def _text_of(sm: dict) -> tuple[str, tuple | None]:
    p = sm["params"]
    body = p["short_message"] or sm["tlvs"].get(Tag.MESSAGE_PAYLOAD, b"")
    concat = None
    if p["esm_class"] & 0x40:
        ies, body = parse_udh(body)
        concat = tuple(ies[0][1])
    elif Tag.SAR_MSG_REF_NUM in sm["tlvs"]:
        t = sm["tlvs"]
        concat = (t[Tag.SAR_MSG_REF_NUM], t[Tag.SAR_TOTAL_SEGMENTS], t[Tag.SAR_SEGMENT_SEQNUM])
    return decode_short_message(p["data_coding"], body), concat


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.sampled_from("abc xyz@€äöΩ\u4e2d😀{}"), max_size=500),
    st.sampled_from(["gsm7", "8bit"]),
    st.sampled_from(["udh", "sar", "payload"]),
)
def test_parts_carry_the_whole_text(text: str, encoding: str, long: str) -> None:
    submits = build_submits("Shop", "+15551234", text, encoding=encoding, long=long, ref=7)
    got = [_text_of(sm) for sm in submits]
    assert "".join(t for t, _ in got) == text
    for sm in submits:
        p = sm["params"]
        body = p["short_message"]
        assert len(body) <= 254 and p["registered_delivery"] == 1
        if len(submits) > 1:
            limit = 140 if p["data_coding"] != 0 else 160  # octets on the air (GSM-7 unpacked)
            assert len(body) <= limit
    if len(submits) > 1:
        total = len(submits)
        assert [c[-2:] for _, c in got] == [(total, i) for i in range(1, total + 1)]
