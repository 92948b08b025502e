"""The GoIP SMS-server codec (bridge/devices/goip_udp/protocol.py), without sockets: literal
datagrams from docs/devices/goip.md part 2, round trips and malformed input."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.devices.base import Redactor, SendOutcome
from bridge.devices.goip_udp.protocol import (
    bounded_put,
    decode_datagram,
    LineState,
    same_number,
    build_msg,
    classify_errorstatus,
    inbound_device_key,
    make_ref,
    parse_keyed,
    parse_ref,
    parse_reply,
    redact_datagram,
)

KEEPALIVE = (
    "req:27;id:gw1;pass:secret;num:;signal:29;gsm_status:LOGIN;voip_status:LOGOUT;"
    "voip_state:IDLE;remain_time:-1;imei:867495023958030;imsi:260060172091324;"
    "iccid:89480611000720913242;pro:POL;idle:11;disable_status:0;SMS_LOGIN:N;SMB_LOGIN:;"
    "CELLINFO:LAC:7E5,CELL ID:5E5B;CGATT:Y;"
)


def test_parse_keepalive_values_with_colons_and_commas():
    d = parse_keyed(KEEPALIVE)
    assert d is not None and d.kind == "req" and d.seq == "27"
    assert d.get("id") == "gw1" and d.get("pass") == "secret"
    assert d.get("num") == "" and d.get("signal") == "29" and d.get("gsm_status") == "LOGIN"
    assert d.get("CELLINFO") == "LAC:7E5,CELL ID:5E5B"
    assert d.get("smb_login") == "" and d.get("cgatt") == "Y"
    assert d.get("imei") == "867495023958030"


@pytest.mark.parametrize(
    "datagram, fields",
    [
        (
            "RECEIVE:441;id:c1;password:secret;srcnum:100;msg:This is sample sms message",
            {"srcnum": "100", "msg": "This is sample sms message"},
        ),
        (
            "RECEIVE:442;id:c1;password:secret;srcnum:+4917;msg:a;b: c;d:e;",
            {"srcnum": "+4917", "msg": "a;b: c;d:e;"},
        ),
        (
            "RECEIVE:443;id:c1;password:secret;srcnum:100;smscnum:+4917600;msg:x;msg:y",
            {"smscnum": "+4917600", "msg": "x;msg:y"},
        ),
        ("RECEIVE:444;id:c1;password:secret;srcnum:100;msg:", {"msg": ""}),
        (
            "DELIVER:429;id:c1;password:secret;sms_no:3;state:0;num:999999999",
            {"sms_no": "3", "state": "0", "num": "999999999"},
        ),
        (
            "STATE:446;id:c1;password:secret;gsm_remain_state:DIALING:999999999",
            {"gsm_remain_state": "DIALING:999999999"},
        ),
    ],
)
def test_parse_keyed_pushes(datagram, fields):
    d = parse_keyed(datagram)
    assert d is not None and d.get("id") == "c1" and d.get("password") == "secret"
    for key, value in fields.items():
        assert d.get(key) == value


def test_parse_keyed_rejects_and_tolerates():
    assert parse_keyed("OK 8622 1 3") is None
    assert parse_keyed("garbage") is None
    assert parse_keyed("") is None
    d = parse_keyed("RECEIVE:id:1;password:secret;srcnum:+1;msg:Hello, World!")
    assert d is not None and d.seq == "" and d.get("id") == "1" and d.get("msg") == "Hello, World!"


@pytest.mark.parametrize(
    "text, verb, sendid, args",
    [
        ("PASSWORD 8622", "PASSWORD", 8622, ()),
        ("SEND 8622\n", "SEND", 8622, ()),
        ("OK 8622 1 3", "OK", 8622, ("1", "3")),
        ("WAIT 8622 1", "WAIT", 8622, ("1",)),
        ("ERROR 8622 1 errorstatus:38", "ERROR", 8622, ("1", "errorstatus:38")),
        ("ERROR 8622 GSM_LOGOUT", "ERROR", 8622, ("GSM_LOGOUT",)),
        ("DONE 8622", "DONE", 8622, ()),
    ],
)
def test_parse_reply(text, verb, sendid, args):
    r = parse_reply(text)
    assert r is not None and (r.verb, r.sendid, r.args) == (verb, sendid, args)


def test_parse_reply_rejects():
    for text in ("OK", "OK x 1", "HELLO 12", "req:1;id:x;", ""):
        assert parse_reply(text) is None


def test_redaction_and_msg_framing():
    assert redact_datagram("req:1;id:gw1;pass:s3cr;et;x:1") == "req:1;id:gw1;pass:***;et;x:1"
    assert "s3c" not in redact_datagram("RECEIVE:1;id:a;password:s3c;msg:hi")
    assert redact_datagram("PASSWORD 12 top secret") == "PASSWORD 12 ***"
    assert build_msg(8622, "Hello world!") == b"MSG 8622 12 Hello world!"
    assert build_msg(1, "Grüße") == b"MSG 1 7 " + "Grüße".encode()


@pytest.mark.parametrize(
    "code, outcome",
    [
        ("38", SendOutcome.ERROR),
        ("42", SendOutcome.ERROR),
        ("500", SendOutcome.ERROR),
        ("1", SendOutcome.REJECTED),
        ("30", SendOutcome.REJECTED),
        ("310", SendOutcome.CHANNEL_DOWN),
        ("331", SendOutcome.CHANNEL_DOWN),
        ("x", SendOutcome.ERROR),
    ],
)
def test_classify_errorstatus(code, outcome):
    assert classify_errorstatus(code)[0] is outcome


def test_refs_and_keys():
    assert make_ref("1", "3", 8622) == "1:3:8622"
    assert parse_ref("1:3:8622") == ("1", "3", 8622)
    assert parse_ref("1::8622") == ("1", "", 8622)
    assert parse_ref("00000e7c") is None
    k = inbound_device_key("gw1", "441", "+49170", "hi;x")
    assert k == inbound_device_key("gw1", "441", "+49170", "hi;x")
    assert k.startswith("gw1|441|") and k != inbound_device_key("gw1", "441", "+49170", "hi;y")


# --------------------------------------------------------------------------------------------
# round trips and malformed datagrams

_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_KEYS = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
#: A field value: anything but the ";" that ends a field (and the CR/LF the parser trims).
_VALUES = st.text(_TEXT.filter(lambda c: c not in ";\r\n"), max_size=30)


@given(
    kind=st.sampled_from(["req", "DELIVER", "STATE", "RECORD"]),
    seq=st.integers(min_value=0, max_value=10**9),
    fields=st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=8),
)
def test_keyed_datagram_round_trip(kind, seq, fields):
    datagram = f"{kind}:{seq};" + "".join(f"{k}:{v};" for k, v in fields.items())
    d = parse_keyed(decode_datagram(datagram.encode("utf-8")))
    assert d is not None and d.kind == kind and d.seq == str(seq)
    assert dict(d.fields) == fields


@given(
    seq=st.integers(min_value=0, max_value=10**9),
    sender=st.from_regex(r"\+?[0-9]{1,15}", fullmatch=True),
    msg=st.text(_TEXT, max_size=200),
)
def test_receive_msg_runs_to_the_end_of_the_datagram(seq, sender, msg):
    datagram = f"RECEIVE:{seq};id:gw1;password:pw;srcnum:{sender};msg:{msg}"
    d = parse_keyed(decode_datagram(datagram.encode("utf-8")))
    assert d is not None and d.seq == str(seq)
    assert d.get("srcnum") == sender and d.get("msg") == msg


@given(sendid=st.integers(min_value=0, max_value=2**31), text=st.text(_TEXT, max_size=200))
def test_msg_frame_carries_the_utf8_byte_length(sendid, text):
    frame = build_msg(sendid, text)
    verb, sid, length, body = frame.split(b" ", 3)
    assert (verb, int(sid), int(length)) == (b"MSG", sendid, len(body))
    assert body.decode("utf-8") == text
    r = parse_reply(frame.decode("utf-8"))
    assert r is not None and (r.verb, r.sendid) == ("MSG", sendid)


@given(
    verb=st.sampled_from(["PASSWORD", "SEND", "OK", "WAIT", "ERROR", "DONE"]),
    sendid=st.integers(min_value=0, max_value=2**31),
    args=st.lists(st.from_regex(r"[A-Za-z0-9_:]{1,12}", fullmatch=True), max_size=3),
)
def test_reply_round_trip(verb, sendid, args):
    r = parse_reply(" ".join([verb, str(sendid), *args]) + "\r\n\x00")
    assert r is not None and (r.verb, r.sendid, r.args) == (verb, sendid, tuple(args))


@given(st.binary(max_size=300))
def test_malformed_datagrams_parse_to_none_or_a_datagram_never_raise(data):
    text = decode_datagram(data)
    d = parse_keyed(text)
    assert d is None or (d.kind and ";" in text)
    r = parse_reply(text)
    assert r is None or r.verb in {"PASSWORD", "SEND", "OK", "WAIT", "ERROR", "DONE", "MSG"}
    redact_datagram(text)


def test_invalid_utf8_falls_back_to_latin1():
    d = parse_keyed(decode_datagram(b"RECEIVE:1;id:gw1;password:pw;srcnum:1;msg:caf\xe9"))
    assert d is not None and d.get("msg") == "caf\xe9"


@given(
    password=st.text(
        _TEXT.filter(lambda c: c != ";" and not c.isspace()), min_size=1, max_size=20
    ),
    key=st.sampled_from(["pass", "password", "PASS", "Password"]),
)
def test_passwords_are_masked(password, key):
    d = parse_keyed(redact_datagram(f"req:1;id:gw1;{key}:{password};signal:20;"))
    assert d is not None and d.get(key) == Redactor.MASK and d.get("signal") == "20"
    assert redact_datagram(f"PASSWORD 12 {password}") == f"PASSWORD 12 {Redactor.MASK}"


@given(
    channel=st.text(_TEXT, min_size=1, max_size=20),
    sms_no=st.from_regex(r"[0-9]{0,6}", fullmatch=True),
    sendid=st.integers(min_value=0, max_value=2**31),
)
def test_ref_round_trip(channel, sms_no, sendid):
    assert parse_ref(make_ref(channel, sms_no, sendid)) == (channel, sms_no, sendid)


def test_same_number_matches_renderings_of_one_number():
    assert same_number("+4917012345678", "017012345678")
    assert not same_number("+4917012345678", "+4917012345679")
    assert same_number("", "+4917012345678")  # the device may leave num empty


def test_line_alive_and_bounded_memory():
    line = LineState(channel="1", line_id="gw1")
    assert not line.alive(100.0, 92.0)
    line.last_seen = 10.0
    assert line.alive(102.0, 92.0) and not line.alive(102.5, 92.0)
    d: OrderedDict = OrderedDict()
    for i in range(5):
        bounded_put(d, i, i, 3)
    bounded_put(d, 2, "again", 3)
    assert list(d) == [3, 4, 2] and d[2] == "again"
