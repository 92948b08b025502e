"""Config for the device side: devices, routes, scheduler policy, receipts, ESME default_route."""

import copy
import datetime

import attrs
import pytest

from bridge.config import (
    AMBIGUOUS_POLICIES,
    DEVICE_KINDS,
    RECEIPT_STATS,
    Caps,
    ChannelOverride,
    Config,
    ConfigError,
    DeviceConfig,
    EsmeConfig,
    FrozenMap,
    ReceiptMapping,
    ReceiptsConfig,
    RouteConfig,
    SchedulerConfig,
    Secret,
    default_demo_config,
    load_config,
    load_config_text,
)

ESMES = "esmes:\n  - system_id: app1\n    password: pw\n"  # lines 1-3
ENV = {"GOIP_PW": "goip-secret", "GOIP2_PW": "other-secret"}


def load(text, env=None, **kw):
    return load_config_text(ESMES + text, env=ENV if env is None else env, **kw)


def problems(text, env=None, **kw):
    """[(path, line, message)]; line numbers count the 3 lines of ESMES."""
    with pytest.raises(ConfigError) as info:
        load(text, env=env, **kw)
    return [(i.path, i.line, i.message) for i in info.value.issues]


def only_problem(text, **kw):
    found = problems(text, **kw)
    assert len(found) == 1, found
    return found[0]


def goip(name="goip1", lines=8, extra=""):
    """A valid goip_http device as one list item (5 lines, plus `extra`)."""
    return (
        f"  - name: {name}\n    kind: goip_http\n    url: http://192.168.1.50\n"
        f"    password_env: GOIP_PW\n    lines: {lines}\n{extra}"
    )


TWO_DEVICES = (
    "devices:\n"  # 4
    + goip("goip1", 8)  # 5-9
    + goip("goip2", 8, "    channels:\n      '5': {enabled: false}\n")  # 10-16
)


# --------------------------------------------------------------------------------------------
# Devices


def test_no_devices_or_routes_means_store_only():
    for text in ("", "devices:\nroutes:\n", "devices: []\nroutes: []\n"):
        cfg = load(text)
        assert cfg.devices == () and cfg.routes == ()
        assert cfg.route_for("app1", "+4917012345") is None
        assert cfg.scheduler == SchedulerConfig() and cfg.receipts == ReceiptsConfig()
        assert cfg.esme("app1").default_route is None


def test_device_defaults():
    cfg = load("devices:\n" + goip())
    (device,) = cfg.devices
    assert device == DeviceConfig(
        name="goip1",
        kind="goip_http",
        url="http://192.168.1.50",
        username="admin",
        password=Secret("goip-secret"),
        lines=8,
        timeout=10.0,
        status_poll_interval=2.0,
        status_timeout=60.0,
        inbox_poll_interval=10.0,
        enabled=True,
        caps=Caps(6, 0, 0, datetime.time(0, 0), 0.2),
        channel_overrides={},
        options={},
    )
    assert device.channel_ids() == ("1", "2", "3", "4", "5", "6", "7", "8")
    assert all(device.channel_enabled(ch) and device.channel_caps(ch) == Caps() for ch in device.channel_ids())
    assert cfg.device("goip1") is device and cfg.device("nope") is None
    assert isinstance(device.timeout, float)


def test_device_full():
    cfg = load(
        """\
devices:
  - name: gw-2_b
    kind: goip_http
    url: https://goip.example.net:8443/sub/
    username: ops
    password: "hunter22"
    lines: 4
    timeout: 2.5
    status_poll_interval: 0.5
    status_timeout: 30
    inbox_poll_interval: 5
    enabled: true
    caps:
      per_minute: 10
      per_hour: 200
      per_day: 500
      day_reset: 06:30
      jitter: 0
    channels:
      2: {enabled: false}
      "03": {caps: {per_day: 100, day_reset: "23:59"}}
      "4":
"""
    )
    (d,) = cfg.devices
    assert (d.name, d.url, d.username, d.password.reveal(), d.lines) == (
        "gw-2_b", "https://goip.example.net:8443/sub", "ops", "hunter22", 4,
    )
    assert (d.timeout, d.status_poll_interval, d.status_timeout, d.inbox_poll_interval) == (2.5, 0.5, 30, 5)
    device_caps = Caps(10, 200, 500, datetime.time(6, 30), 0.0)
    assert d.caps == device_caps
    # overrides are merged over the device caps
    assert d.channel_overrides == {
        "2": ChannelOverride(False, device_caps),
        "3": ChannelOverride(True, Caps(10, 200, 100, datetime.time(23, 59), 0.0)),
        "4": ChannelOverride(True, device_caps),
    }
    assert d.channel_caps("3").per_day == 100 and d.channel_caps("1") == device_caps
    assert [ch for ch in d.channel_ids() if d.channel_enabled(ch)] == ["1", "3", "4"]
    assert d.enabled_channels() == ("1", "3", "4")


def test_unquoted_day_reset_that_yaml_reads_as_a_number():
    # YAML 1.1 reads 12:30 as the sexagesimal integer 750; the text as written is what counts
    cfg = load("devices:\n" + goip(extra="    caps: {day_reset: 12:30}\n"))
    assert cfg.devices[0].caps.day_reset == datetime.time(12, 30)
    assert only_problem("devices:\n" + goip(extra="    caps: {day_reset: 24:00}\n")) == (
        "devices[0].caps.day_reset", 10, 'expected a local time of day as "HH:MM" (00:00 to 23:59), got \'24:00\''
    )


def test_disabled_device_has_no_enabled_channels():
    cfg = load("devices:\n" + goip(extra="    enabled: false\n"))
    d = cfg.devices[0]
    assert not d.enabled and d.enabled_channels() == ()
    assert not d.channel_enabled("1")
    assert d.channel_caps("1") == Caps()


def test_device_model_lookups():
    d = DeviceConfig("g", "goip_http", lines=2, channel_overrides={"2": ChannelOverride(caps=Caps(per_day=3))})
    assert d.channel_caps("2") == Caps(per_day=3)
    with pytest.raises(KeyError):
        d.channel_caps("3")
    assert not d.channel_enabled("3") and not d.channel_enabled("0")
    assert isinstance(d.channel_overrides, FrozenMap) and isinstance(d.options, FrozenMap)
    with pytest.raises(TypeError):
        d.channel_overrides["1"] = ChannelOverride()


def test_device_name_and_kind_errors():
    text = """\
devices:
  - name: GoIP1
    kind: goip_http
    url: http://x
    password_env: GOIP_PW
    lines: 2
  - name: goip2
    kind: goip_htp
    url: whatever
    colour: blue
  - kind: goip_http
    url: http://x
    password_env: GOIP_PW
    lines: 2
  - name: goip3
    url: http://x
  - just-a-name
"""
    assert problems(text) == [
        (
            "devices[0].name", 5,
            "expected a device name: 1-32 characters of lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit, got 'GoIP1'",
        ),
        ("devices[1].kind", 11, "expected a device kind: one of 'goip_http', 'goip_udp', 'router', 'brevis', 'smsgateway24', 'smsgate', got 'goip_htp' (did you mean 'goip_http'?)"),
        ("devices[2].name", 14, "missing: expected a device name"),
        ("devices[3].kind", 18, "missing: expected a device kind: one of 'goip_http', 'goip_udp', 'router', 'brevis', 'smsgateway24', 'smsgate'"),
        ("devices[4]", 20, "expected a device (a mapping with name, kind ...), got 'just-a-name'"),
    ]


def test_duplicate_device_name():
    text = "devices:\n" + goip("goip1") + goip("goip1")
    assert only_problem(text) == ("devices[1].name", 10, "duplicate device name 'goip1' (first used at line 5)")


def test_unknown_device_key_suggests():
    assert only_problem("devices:\n" + goip(extra="    line: 3\n")) == (
        "devices[0].line", 10, "unknown key 'line' (did you mean 'lines'?)"
    )
    assert only_problem("devices:\n" + goip(extra="    caps: {per_min: 3}\n")) == (
        "devices[0].caps.per_min", 10, "unknown key 'per_min' (did you mean 'per_minute'?)"
    )


def test_goip_url_errors():
    def url_problem(url):
        text = f"devices:\n  - name: g\n    kind: goip_http\n    url: {url}\n    password_env: GOIP_PW\n    lines: 1\n"
        return only_problem(text)

    assert url_problem("192.168.1.50") == (
        "devices[0].url", 7,
        "expected a URL starting with http:// or https://, got '192.168.1.50' (did you mean 'http://192.168.1.50'?)",
    )
    assert url_problem("ftp://192.168.1.50")[2] == "expected an http:// or https:// URL, got 'ftp://192.168.1.50'"
    assert url_problem('"http://"')[2] == "expected a URL with a host, like http://192.168.1.50, got 'http://'"
    assert url_problem("http://1.2.3.4:99999")[2] == (
        "expected a URL with a port from 0 to 65535, got 'http://1.2.3.4:99999'"
    )
    assert url_problem('"http://1.2.3.4/?u=admin"')[2].startswith("expected the device's base URL without '?...'")
    assert url_problem('"http://bad host/"')[2].startswith("expected a URL with a valid host")
    assert load(
        "devices:\n  - {name: g, kind: goip_http, url: 'http://[::1]:8080/', password_env: GOIP_PW, lines: 1}\n"
    ).devices[0].url == "http://[::1]:8080"
    missing = "devices:\n  - name: g\n    kind: goip_http\n    password_env: GOIP_PW\n    lines: 1\n"
    assert only_problem(missing) == (
        "devices[0].url", 5, "missing: expected the GoIP's base URL, like http://192.168.1.50"
    )


def test_goip_url_with_credentials_is_refused_without_echoing_them():
    text = "devices:\n" + goip().replace("http://192.168.1.50", "http://admin:s3cr3t-pw@192.168.1.50")
    path, line, message = only_problem(text)
    assert (path, line) == ("devices[0].url", 7)
    assert message == (
        "expected a URL without credentials: remove 'user:password@' from the URL and use "
        "the username and password (or password_env, password_file) keys instead"
    )
    with pytest.raises(ConfigError) as info:
        load(text)
    assert "s3cr3t" not in str(info.value)


def test_goip_password_sources(tmp_path):
    base = "devices:\n  - name: g\n    kind: goip_http\n    url: http://h\n    lines: 1\n"  # item at line 5
    assert only_problem(base) == (
        "devices[0]", 5, "missing password: expected exactly one of password, password_env, password_file"
    )
    assert only_problem(base + "    password: a\n    password_env: GOIP_PW\n") == (
        "devices[0].password_env", 10, "expected exactly one password source, got 2: password, password_env"
    )
    assert only_problem(base + "    password_env: NOPE\n") == (
        "devices[0].password_env", 9, "environment variable NOPE is not set"
    )
    assert only_problem(base + "    password_env: E\n", env={"E": "a\nb"}) == (
        "devices[0].password_env", 9,
        "the value of environment variable E contains control characters (a stray line break?)",
    )
    assert only_problem(base + "    password_env: E\n", env={"E": ""}) == (
        "devices[0].password_env", 9, "the value of environment variable E is empty"
    )
    # no SMPP 8-character limit for device passwords; numbers must be quoted as for ESMEs
    assert load(base + "    password: a-much-longer-password\n").devices[0].password.reveal() == "a-much-longer-password"
    assert only_problem(base + "    password: 12345678\n") == (
        "devices[0].password", 9, "expected a string, got an integer (put the value in quotes)"
    )
    secret = tmp_path / "goip.secret"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    assert load(base + f"    password_file: {secret}\n").devices[0].password.reveal() == "from-file"
    secret.chmod(0o644)
    path, line, message = only_problem(base + f"    password_file: {secret}\n")
    assert (path, line) == ("devices[0].password_file", 9) and f"chmod 600 {secret}" in message


def test_goip_inline_password_refused_in_world_readable_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SMPP_BRIDGE_TEST_X", "pw")
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "esmes:\n  - system_id: app1\n    password_env: SMPP_BRIDGE_TEST_X\n"
        "devices:\n  - name: g\n    kind: goip_http\n    url: http://h\n    lines: 1\n    password: inline-pw\n"
    )
    path.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(i.path, i.line) for i in info.value.issues] == [("devices[0].password", 9)]
    assert "password_env or password_file" in info.value.issues[0].message
    assert "inline-pw" not in str(info.value)
    path.chmod(0o600)
    assert load_config(path).devices[0].password.reveal() == "inline-pw"


def test_goip_lines_username_and_durations():
    text = """\
devices:
  - name: g
    kind: goip_http
    url: http://h
    password_env: GOIP_PW
    lines: 65
    username: "a:b"
    timeout: 0
    status_poll_interval: 5
    status_timeout: 5
    inbox_poll_interval: fast
    enabled: "yes"
  - name: h
    kind: goip_http
    url: http://h
    password_env: GOIP_PW
"""
    assert problems(text) == [
        ("devices[0].lines", 9, "expected an integer from 1 to 64, got 65"),
        ("devices[0].username", 10, "expected a user name without ':' (it is sent in HTTP Basic auth), got 'a:b'"),
        ("devices[0].timeout", 11, "expected a number of seconds greater than 0, got 0"),
        (
            "devices[0].status_timeout", 13,
            "expected status_timeout greater than status_poll_interval, got status_timeout 5 and "
            "status_poll_interval 5 (the status would never be polled before the bridge gives up on it)",
        ),
        ("devices[0].inbox_poll_interval", 14, "expected a number of seconds greater than 0, got 'fast'"),
        ("devices[0].enabled", 15, "expected true or false, got 'yes'"),
        ("devices[1].lines", 16, "missing: expected the number of GSM lines (SIM slots) of this GoIP, 1..64"),
    ]


def test_caps_errors():
    text = "devices:\n" + goip(
        extra="    caps:\n      per_minute: -1\n      per_hour: 1.5\n      per_day: 0100\n      jitter: 0.95\n"
    )
    assert problems(text) == [
        ("devices[0].caps.per_minute", 11, "expected a whole number of messages, 0 or more (0 = no limit), got -1"),
        ("devices[0].caps.per_hour", 12, "expected a whole number of messages, 0 or more (0 = no limit), got 1.5"),
        (
            "devices[0].caps.per_day", 13,
            "expected a whole number of messages, 0 or more (0 = no limit), got 0100 which YAML reads as "
            "octal 64; drop the leading zero",
        ),
        ("devices[0].caps.jitter", 14, "expected a fraction of the pacing interval from 0 to 0.9, got 0.95"),
    ]
    assert only_problem("devices:\n" + goip(extra="    caps: 6\n")) == (
        "devices[0].caps", 10,
        "expected a mapping of caps (per_minute, per_hour, per_day, day_reset, jitter), got 6",
    )


def test_channel_override_errors():
    text = "devices:\n" + goip(
        lines=4,
        extra=(
            "    channels:\n"  # 10
            "      '5': {enabled: false}\n"  # 11
            "      '03': {enabled: false}\n"  # 12
            "      3: {caps: {per_day: 1}}\n"  # 13
            "      '1': {enable: false}\n"  # 14
            "      '2': {caps: {jitter: 2}}\n"  # 15
            "      x: {enabled: true}\n"  # 16
        ),
    )
    assert problems(text) == [
        ("devices[0].channels.5", 11, "expected a channel id of this device (1..4), got '5'"),
        ("devices[0].channels.3", 13, "channel 3 is given twice (also as '03' at line 12)"),
        ("devices[0].channels.1.enable", 14, "unknown key 'enable' (did you mean 'enabled'?)"),
        ("devices[0].channels.2.caps.jitter", 15, "expected a fraction of the pacing interval from 0 to 0.9, got 2"),
        ("devices[0].channels.x", 16, "expected a channel id of this device (1..4), got 'x'"),
    ]
    assert only_problem("devices:\n" + goip(extra="    channels: [1, 2]\n")) == (
        "devices[0].channels", 10,
        "expected a mapping of channel id to overrides, like \"3\": {enabled: false}, got a list",
    )


def test_devices_section_shape():
    assert only_problem("devices:\n  name: goip1\n") == (
        "devices", 5, "expected a list of devices (may be empty), got a mapping (start each device with '- name: ...')"
    )
    assert only_problem("devices: goip1\n") == ("devices", 4, "expected a list of devices (may be empty), got 'goip1'")


# --------------------------------------------------------------------------------------------
# Routes


def test_channel_specs():
    cfg = load(
        TWO_DEVICES
        + """\
routes:
  - name: r
    prefixes: ["+1"]
    channels: ["goip2:1-4,7", "goip2: 2 , 8", goip2:6-6, "goip1:01", "goip2:3-4"]
"""
    )
    (r,) = cfg.routes
    assert r.channels == (
        ("goip2", "1"), ("goip2", "2"), ("goip2", "3"), ("goip2", "4"), ("goip2", "7"),
        ("goip2", "8"), ("goip2", "6"), ("goip1", "1"),
    )


def test_device_name_in_a_route_means_its_enabled_channels():
    cfg = load(TWO_DEVICES + "routes:\n  - name: r\n    channels: [goip2, goip2, 'goip2:5']\n")
    assert cfg.routes[0].channels == tuple(("goip2", ch) for ch in ("1", "2", "3", "4", "6", "7", "8"))


def test_channel_spec_errors():
    text = TWO_DEVICES + """\
routes:
  - name: r
    channels:
      - goip3
      - "goip2:9"
      - "goip2:4-9"
      - "goip2:4-2"
      - "goip2:"
      - "goip2:1,,2"
      - "goip2:a-b"
      - "goip2:x"
      - 7
      - [goip1]
      - ""
"""
    found = problems(text)
    assert found == [
        ("routes[0].channels[0]", 20, "unknown device 'goip3' (did you mean 'goip2'?)"),
        ("routes[0].channels[1]", 21, "expected channels of this device (1..8), got '9', in 'goip2:9' (device 'goip2')"),
        (
            "routes[0].channels[2]", 22,
            "expected channels of this device (1..8), got '4-9': there is no channel 9, in 'goip2:4-9' (device 'goip2')",
        ),
        (
            "routes[0].channels[3]", 23,
            "expected a channel range from low to high, got '4-2' (write 2-4), in 'goip2:4-2' (device 'goip2')",
        ),
        (
            "routes[0].channels[4]", 24,
            "expected channel ids after ':', like goip2:1-4,7, in 'goip2:' (device 'goip2')",
        ),
        (
            "routes[0].channels[5]", 25,
            "expected channel ids separated by single commas, found an empty one, in 'goip2:1,,2' (device 'goip2')",
        ),
        ("routes[0].channels[6]", 26, "expected a channel range like 1-4, got 'a-b', in 'goip2:a-b' (device 'goip2')"),
        ("routes[0].channels[7]", 27, "expected channels of this device (1..8), got 'x', in 'goip2:x' (device 'goip2')"),
        ("routes[0].channels[8]", 28, "unknown device '7' (known devices: goip1, goip2)"),
        (
            "routes[0].channels[9]", 29,
            'expected a device name, or device:channels like "goip2:1-4,7", got a list',
        ),
        (
            "routes[0].channels[10]", 30,
            "expected a device name, or device:channels like \"goip2:1-4,7\", got ''",
        ),
    ]


def test_unknown_device_when_there_are_no_devices():
    assert only_problem("routes:\n  - name: r\n    channels: [goip1]\n") == (
        "routes[0].channels[0]", 6, "unknown device 'goip1' (no devices are configured)"
    )


def test_routes_over_a_broken_device_do_not_repeat_its_error():
    text = "devices:\n" + goip(lines=99) + "routes:\n  - name: r\n    channels: [goip1, 'goip1:3']\n"
    assert only_problem(text) == ("devices[0].lines", 9, "expected an integer from 1 to 64, got 99")
    assert only_problem("devices: 5\nroutes:\n  - name: r\n    channels: [goip1]\n") == (
        "devices", 4, "expected a list of devices (may be empty), got 5"
    )


def test_route_with_only_disabled_channels_is_an_error():
    text = TWO_DEVICES + """\
routes:
  - name: r
    channels: ["goip2:5"]
"""
    assert only_problem(text) == (
        "routes[0].channels", 19,
        "expected at least one enabled channel, but every channel listed is disabled: goip2:5",
    )
    text = "devices:\n" + goip(extra="    enabled: false\n") + "routes:\n  - name: r\n    channels: [goip1]\n"
    assert only_problem(text) == (
        "routes[0].channels", 13,
        "expected at least one enabled channel, but every channel listed is disabled: goip1 (enabled: false)",
    )


def test_route_errors():
    text = TWO_DEVICES + """\
routes:
  - name: Germany
    prefixes: [+49, "49x", 0044, ""]
    regex: "(("
    channels: [goip1]
  - name: r2
    prefixes: []
    regex: "^1"
    channels: []
  - name: r3
    prefixes: "+49"
  - name: r2
    channels: [goip1]
  - name: r4
    channels: [goip1]
    colour: red
"""
    assert problems(text) == [
        (
            "routes[0].name", 18,
            "expected a route name: 1-32 characters of lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit, got 'Germany'",
        ),
        (
            "routes[0].prefixes[1]", 19,
            'expected a destination prefix: digits with an optional leading +, like "+49" or "0049", got \'49x\'',
        ),
        (
            "routes[0].prefixes[3]", 19,
            'expected a destination prefix: digits with an optional leading +, like "+49" or "0049", got \'\'',
        ),
        (
            "routes[0].regex", 20,
            "expected a regular expression (Python re syntax, in quotes), got '((': "
            "missing ), unterminated subpattern at position 1",
        ),
        (
            "routes[1].prefixes", 23,
            "expected at least one prefix, got an empty list (to match every destination, leave out both "
            "prefixes and regex)",
        ),
        (
            "routes[1].channels", 25,
            'expected a list of devices or device:channels, like [goip1, "goip2:1-4,7"], got an empty list',
        ),
        (
            "routes[2].channels", 26,
            'missing: expected a list of devices or device:channels, like [goip1, "goip2:1-4,7"]',
        ),
        ("routes[2].prefixes", 27, 'expected a list of destination prefixes, like ["+49", "0049"], got \'+49\''),
        ("routes[3].name", 28, "duplicate route name 'r2' (first used at line 22)"),
        ("routes[4].colour", 32, "unknown key 'colour' (known keys: name, prefixes, regex, channels, failover)"),
    ]


def test_routes_after_a_catch_all_can_never_match():
    text = TWO_DEVICES + """\
routes:
  - name: everything
    channels: [goip1]
  - name: germany
    prefixes: ["+49"]
    channels: [goip2]
"""
    assert only_problem(text) == (
        "routes[1]", 20,
        "route 'germany' can never match: route 'everything' (line 18) comes first and matches every "
        "destination (it has no prefixes and no regex); move the catch-all route to the end",
    )


ROUTED = (
    TWO_DEVICES
    + """\
routes:
  - name: germany
    prefixes: [+49, 0049]
    channels: [goip1]
  - name: us
    regex: "^\\\\+?1[2-9]"
    channels: ["goip2:1-2"]
  - name: both
    prefixes: ["+44"]
    regex: "^44"
    channels: ["goip2:3"]
"""
)


def test_route_matching_and_route_for_order():
    cfg = load(ROUTED)
    germany, us, both = cfg.routes
    assert germany.prefixes == ("+49", "0049") and germany.regex is None
    assert us.prefixes == () and us.regex.pattern == "^\\+?1[2-9]"
    assert cfg.route("us") is us and cfg.route("nope") is None
    assert germany.matches("+491701234") and germany.matches("00491701234") and not germany.matches("491701234")
    assert us.matches("+12125550100") and us.matches("12125550100") and not us.matches("+11")
    assert both.matches("+447700900000") and both.matches("447700900000") and not both.matches("0044")
    assert cfg.route_for("app1", "+491701234") is germany
    assert cfg.route_for("app1", "+12125550100") is us
    assert cfg.route_for("app1", "+33612345678") is None  # no match, no default_route
    assert cfg.route_for("nobody", "+491701234") is germany


def test_first_match_wins():
    cfg = load(
        TWO_DEVICES
        + "routes:\n"
        + "  - {name: a, prefixes: ['+4917'], channels: [goip1]}\n"
        + "  - {name: b, prefixes: ['+49'], channels: [goip2]}\n"
        + "  - {name: c, channels: [goip2]}\n"
    )
    assert [cfg.route_for("app1", d).name for d in ("+49170", "+49151", "+4", "x")] == ["a", "b", "c", "c"]


def test_default_route():
    text = (
        "esmes:\n  - system_id: app1\n    password: pw\n    default_route: us\n"
        "  - system_id: app2\n    password: pw\n"
    ) + ROUTED
    cfg = load_config_text(text, env=ENV)
    assert cfg.esme("app1").default_route == "us" and cfg.esme("app2").default_route is None
    assert cfg.route_for("app1", "+33612345678") is cfg.route("us")
    assert cfg.route_for("app2", "+33612345678") is None
    assert cfg.route_for("app1", "+491701234") is cfg.route("germany")  # a matching route wins


def test_default_route_must_exist():
    base = "esmes:\n  - system_id: app1\n    password: pw\n    default_route: {}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(base.format("germny") + ROUTED, env=ENV)
    assert [(i.path, i.line, i.message) for i in info.value.issues] == [
        ("esmes[0].default_route", 4, "expected the name of a route, got 'germny' (did you mean 'germany'?)")
    ]
    with pytest.raises(ConfigError) as info:
        load_config_text(base.format("x"), env=ENV)
    assert [(i.path, i.line, i.message) for i in info.value.issues] == [
        ("esmes[0].default_route", 4, "expected the name of a route, got 'x' (no routes are configured)")
    ]
    # a route that exists but has its own errors: only its own errors are reported
    with pytest.raises(ConfigError) as info:
        load_config_text(base.format("r") + "routes:\n  - name: r\n    channels: [nodev]\n", env=ENV)
    assert [(i.path, i.line) for i in info.value.issues] == [("routes[0].channels[0]", 7)]


def test_route_model_direct_construction():
    r = RouteConfig("r", prefixes=["+49"], regex="^0049", channels=[["g", "1"]])
    assert r.regex.pattern == "^0049" and r.channels == (("g", "1"),) and r.prefixes == ("+49",)
    assert r.matches("+4930") and r.matches("004930") and not r.matches("4930")
    assert RouteConfig("all").catch_all and RouteConfig("all").matches("anything")
    cfg = Config(
        esmes=[EsmeConfig("e", default_route="all")],
        routes=[RouteConfig("de", prefixes=["+49"]), RouteConfig("all")],
    )
    assert cfg.route_for("e", "+1").name == "all"
    assert Config(esmes=[EsmeConfig("e", default_route="ghost")]).route_for("e", "+1") is None


# --------------------------------------------------------------------------------------------
# Scheduler and receipts


def test_scheduler_defaults_and_full():
    assert SchedulerConfig() == SchedulerConfig(
        172_800, 604_800, 5, 10, 600, 1.0, 120, 3, 30, 1800, "unknown"
    )
    cfg = load(
        """\
scheduler:
  default_validity: 3600
  max_validity: 7200
  max_attempts: 2
  retry_backoff: 1.5
  retry_backoff_max: 60
  busy_retry: 0.25
  logout_cooldown: 30
  quarantine_after: 5
  quarantine_base: 10
  quarantine_max: 10
  ambiguous: RESEND
"""
    )
    assert cfg.scheduler == SchedulerConfig(3600, 7200, 2, 1.5, 60, 0.25, 30, 5, 10, 10, "resend")
    assert AMBIGUOUS_POLICIES == ("unknown", "resend")


def test_scheduler_errors():
    text = """\
scheduler:
  default_validity: 0
  max_attempts: 0
  retry_backoff: 20
  retry_backoff_max: 10
  quarantine_base: 3600
  ambiguous: maybe
  quarantine_after: 1.5
  busy_retyr: 1
"""
    assert problems(text) == [
        ("scheduler.default_validity", 5, "expected a number of seconds greater than 0, got 0"),
        ("scheduler.max_attempts", 6, "expected an integer from 1 to 100, got 0"),
        (
            "scheduler.retry_backoff_max", 8,
            "expected retry_backoff_max at least retry_backoff, got retry_backoff_max 10 and retry_backoff 20 "
            "(the first back-off would already exceed the maximum)",
        ),
        (
            "scheduler.quarantine_base", 9,
            "expected quarantine_max at least quarantine_base, got quarantine_max 1800 and quarantine_base 3600 "
            "(the first quarantine would already exceed the maximum)",
        ),
        ("scheduler.ambiguous", 10, "expected one of 'unknown', 'resend', got 'maybe'"),
        ("scheduler.quarantine_after", 11, "expected an integer of at least 1, got 1.5"),
        ("scheduler.busy_retyr", 12, "unknown key 'busy_retyr' (did you mean 'busy_retry'?)"),
    ]
    assert only_problem("scheduler:\n  default_validity: 700000\n") == (
        "scheduler.default_validity", 5,
        "expected max_validity at least default_validity, got max_validity 604800 and default_validity 700000 "
        "(the default would always be cut to the maximum)",
    )


def test_receipts():
    assert ReceiptsConfig() == ReceiptsConfig("delivered", 604_800, {})
    cfg = load(
        """\
receipts:
  goip_done: Accepted
  retention: 86400
  map:
    goip_http:
      "2172": {stat: undeliv, err: 172}
      2173: {stat: REJECTD}
"""
    )
    assert cfg.receipts.goip_done == "accepted" and cfg.receipts.retention == 86400
    assert cfg.receipts.map == {
        "goip_http": {"2172": ReceiptMapping("UNDELIV", 172), "2173": ReceiptMapping("REJECTD", 0)}
    }
    assert cfg.receipts.map["goip_http"]["2172"].err == 172
    assert isinstance(cfg.receipts.map["goip_http"], FrozenMap)
    assert "DELIVRD" in RECEIPT_STATS and len(RECEIPT_STATS) == 7


def test_receipts_errors():
    text = """\
receipts:
  goip_done: done
  retention: -1
  map:
    goip:
      "1": {stat: UNDELIV}
    goip_http:
      "1": {stat: LOST, err: 1}
      "2": {stat: UNDELIV, err: 1000}
      "3":
      "4": UNDELIV
      "5": {stat: UNDELIV, code: 1}
"""
    stats = "DELIVRD, EXPIRED, UNDELIV, ACCEPTD, UNKNOWN, REJECTD"  # DELETED: cancel_sm's alone
    assert problems(text) == [
        ("receipts.goip_done", 5, "expected one of 'delivered', 'accepted', got 'done'"),
        ("receipts.retention", 6, "expected a number of seconds greater than 0, got -1"),
        ("receipts.map.goip", 8, "unknown key 'goip' (did you mean 'goip_udp'?)"),
        ("receipts.map.goip_http.1.stat", 11, f"expected a receipt stat: one of {stats}, got 'LOST'"),
        ("receipts.map.goip_http.2.err", 12, "expected an integer from 0 to 999, got 1000"),
        ("receipts.map.goip_http.3.stat", 13, f"missing: expected a receipt stat: one of {stats}"),
        (
            "receipts.map.goip_http.4", 14,
            "expected a receipt (a mapping with stat and err), like {stat: UNDELIV, err: 172}, got 'UNDELIV'",
        ),
        ("receipts.map.goip_http.5.code", 15, "unknown key 'code' (known keys: stat, err)"),
    ]


# --------------------------------------------------------------------------------------------
# Across sections


def test_every_error_in_one_pass():
    text = """\
esmes:
  - system_id: app1
    password: pw
    default_route: nowhere
devices:
  - name: goip1
    kind: goip_http
    url: http://h
    password_env: GOIP_PW
    lines: 0
routes:
  - name: r
    channels: [goip9]
scheduler:
  max_attempts: -1
receipts:
  goip_done: 1
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, env=ENV, source="bridge.yaml")
    assert str(info.value).splitlines() == [
        "bridge.yaml:4: esmes[0].default_route: expected the name of a route, got 'nowhere' (known routes: r)",
        "bridge.yaml:10: devices[0].lines: expected an integer from 1 to 64, got 0",
        "bridge.yaml:13: routes[0].channels[0]: unknown device 'goip9' (did you mean 'goip1'?)",
        "bridge.yaml:15: scheduler.max_attempts: expected an integer from 1 to 100, got -1",
        "bridge.yaml:17: receipts.goip_done: expected one of 'delivered', 'accepted', got 1 (put the value in quotes)",
    ]


def test_yaml_merge_keys_share_device_settings():
    cfg = load(
        """\
devices:
  - &goip
    name: goip1
    kind: goip_http
    url: http://10.0.0.1
    password_env: GOIP_PW
    lines: 4
    caps: {per_minute: 8}
  - <<: *goip
    name: goip2
    url: http://10.0.0.2
"""
    )
    g1, g2 = cfg.devices
    assert g2.url == "http://10.0.0.2" and g2.lines == 4 and g2.caps.per_minute == 8 and g1.name == "goip1"


def test_config_with_devices_is_hashable_and_comparable():
    cfg = load(ROUTED + "receipts:\n  map:\n    goip_http:\n      '1': {stat: UNDELIV}\n")
    again = load(ROUTED + "receipts:\n  map:\n    goip_http:\n      '1': {stat: UNDELIV}\n")
    assert cfg == again and hash(cfg) == hash(again)
    assert copy.deepcopy(cfg) == cfg
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.devices[0].lines = 3


def test_frozen_map():
    m = FrozenMap({"a": 1})
    assert m == {"a": 1} and m == FrozenMap([("a", 1)]) and m != {"a": 2}
    assert hash(m) == hash(FrozenMap({"a": 1}))
    assert list(m) == ["a"] and len(m) == 1 and m.get("b") is None
    with pytest.raises(AttributeError):
        m._data = {}
    assert repr(m) == "FrozenMap({'a': 1})"
    assert copy.deepcopy(m) == m


def test_device_secrets_never_in_repr():
    cfg = load("devices:\n" + goip().replace("password_env: GOIP_PW", "password: 'pw-inline-xyz'"))
    for text in (repr(cfg), str(cfg), repr(cfg.devices), repr(cfg.devices[0]), f"{cfg.devices[0]}"):
        assert "pw-inline-xyz" not in text and "goip-secret" not in text
        assert "password=***" in text


def test_device_kinds_registry():
    # Every kind has a driver (bridge.devices.build_driver) and an emulator.
    assert DEVICE_KINDS == ("goip_http", "goip_udp", "router", "brevis", "smsgateway24", "smsgate")


# --------------------------------------------------------------------------------------------
# Demo config


def test_demo_config_without_goip_only_stores(tmp_path):
    cfg = default_demo_config(tmp_path)
    assert cfg.devices == () and cfg.routes == () and cfg.esme("demo").default_route is None
    assert cfg.route_for("demo", "+491701234") is None


def test_demo_config_with_goip(tmp_path):
    cfg = default_demo_config(tmp_path, smpp_port=2999, goip_url="http://127.0.0.1:8080/", goip_lines=4,
                              goip_password="pw9")
    (goip1,) = cfg.devices
    assert goip1 == DeviceConfig(
        name="goip1",
        kind="goip_http",
        url="http://127.0.0.1:8080",
        username="admin",
        password=Secret("pw9"),
        lines=4,
        timeout=5.0,
        status_poll_interval=0.5,
        caps=Caps(per_minute=0),
    )
    (route,) = cfg.routes
    assert route.name == "default" and route.catch_all
    assert route.channels == (("goip1", "1"), ("goip1", "2"), ("goip1", "3"), ("goip1", "4"))
    assert cfg.esme("demo").default_route == "default"
    assert cfg.route_for("demo", "+491701234") is route
    assert cfg.device("goip1") is goip1 and "pw9" not in repr(cfg)
    assert default_demo_config(tmp_path, goip_url="http://x").devices[0].password.reveal() == "admin"
    assert len(default_demo_config(tmp_path, goip_url="http://x").devices[0].channel_ids()) == 8
