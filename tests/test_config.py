import copy
import hmac
import ipaddress
import re
from pathlib import Path

import attrs
import pytest

from bridge import config as config_module
from bridge.config import (
    AdminConfig,
    Caps,
    ChannelOverride,
    Config,
    ConfigError,
    ConfigIssue,
    DeviceConfig,
    EsmeConfig,
    Limits,
    Listener,
    LoggingConfig,
    PduLogConfig,
    InboundConfig,
    InboundRoute,
    OptoutConfig,
    LOOPBACK_NETWORKS,
    ReceiptMapping,
    ReceiptsConfig,
    RouteConfig,
    SchedulerConfig,
    Secret,
    SmppConfig,
    StoreConfig,
    Timers,
    TlsConfig,
    default_demo_config,
    load_config,
    load_config_text,
)
from bridge.passwords import hash_password

EXAMPLE = Path(__file__).resolve().parent.parent / "bridge.yaml.example"
HASH = hash_password("hashed", iterations=1_000)
MINIMAL = "esmes:\n  - system_id: app1\n    password: pw\n"


def load(text, **kw):
    return load_config_text(text, **kw)


def problems(text, **kw):
    """[(path, line, message)] of the ConfigError that loading `text` must raise."""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, **kw)
    return [(i.path, i.line, i.message) for i in info.value.issues]


def only_problem(text, **kw):
    found = problems(text, **kw)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------------------------
# The example file and the demo config


EXAMPLE_ENV = {"APP1_PASSWORD": "s3cret", "GOIP1_PASSWORD": "goip-pw"}


def test_example_loads(tmp_path):
    cfg = load_config_text(EXAMPLE.read_text(), env=EXAMPLE_ENV, base_dir=tmp_path)
    app1, crm = cfg.esmes
    assert app1.system_id == "app1" and app1.password.reveal() == "s3cret"
    assert app1.allowed_ips == LOOPBACK_NETWORKS
    assert crm.password is None and crm.password_hash.startswith("pbkdf2_sha256$")
    assert crm.allows("10.20.3.4") and not crm.allows("10.21.0.1")
    assert cfg.smpp.listeners == (Listener("0.0.0.0", 2775),)
    assert cfg.store.path == tmp_path / "data" / "bridge.sqlite3"  # store.path unset; tests/ops/test_operator_cli.py
    assert cfg.admin == AdminConfig()
    (goip1,) = cfg.devices
    assert cfg.device("goip1") is goip1
    assert (goip1.kind, goip1.url, goip1.username, goip1.lines) == ("goip_http", "http://192.168.1.50", "admin", 8)
    assert goip1.password.reveal() == "goip-pw"
    assert goip1.caps == Caps() and goip1.channel_caps("4") == Caps(per_day=100)
    assert not goip1.channel_enabled("3") and goip1.channel_enabled("4")
    germany, everything = cfg.routes
    assert germany.prefixes == ("+49", "0049") and germany.regex.pattern == "^49[0-9]{9,}$"
    assert germany.channels == (("goip1", "1"), ("goip1", "2"), ("goip1", "4"), ("goip1", "7"))
    assert everything.catch_all
    assert everything.channels == tuple(("goip1", ch) for ch in ("1", "2", "4", "5", "6", "7", "8"))
    assert cfg.route_for("app1", "+4917012345") is germany
    assert cfg.route_for("app1", "491701234567") is germany
    assert cfg.route_for("crm", "+33612345678") is everything
    assert cfg.scheduler == SchedulerConfig()
    assert cfg.receipts == ReceiptsConfig()
    assert app1.default_route is None


def test_example_commented_receipt_map_works_when_uncommented():
    text = EXAMPLE.read_text()
    text = text.replace("  # map:\n  #   goip_http:\n  #     ", "  map:\n    goip_http:\n      ")
    cfg = load_config_text(text, env=EXAMPLE_ENV)
    assert cfg.receipts.map == {"goip_http": {"2172": ReceiptMapping("UNDELIV", 172)}}


def test_example_commented_tls_listener_works_when_uncommented(tmp_path):
    (tmp_path / "fullchain.pem").write_text("cert")
    (tmp_path / "privkey.pem").write_text("key")
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("    # - host: 0.0.0.0")
    for i in range(start, start + 5):
        lines[i] = lines[i].replace("    # ", "    ", 1).replace("/etc/smpp-bridge/tls", str(tmp_path))
    cfg = load_config_text("\n".join(lines), env=EXAMPLE_ENV)
    assert cfg.smpp.listeners[1] == Listener(
        "0.0.0.0", 3550, TlsConfig(tmp_path / "fullchain.pem", tmp_path / "privkey.pem")
    )


def test_example_documents_every_key():
    text = EXAMPLE.read_text()
    keys = {"token", "token_env", "token_file", "password_env", "password_file", "tls", "cert", "key"}
    not_yaml_keys = {"channel_overrides", "options"}  # a device's `channels:` fills channel_overrides
    for cls in (
        SmppConfig, Listener, Timers, EsmeConfig, StoreConfig, Limits, AdminConfig, LoggingConfig, Config,
        PduLogConfig, InboundConfig, InboundRoute, OptoutConfig,
        DeviceConfig, Caps, ChannelOverride, RouteConfig, SchedulerConfig, ReceiptsConfig,
    ):
        keys |= {f.name for f in attrs.fields(cls) if not f.name.startswith("_")} - not_yaml_keys
    for key in sorted(keys):
        assert re.search(rf"^\s*#?\s*-?\s*{key}:", text, re.M), f"{key} is not documented in the example"
    for key in (f.name for f in attrs.fields(ReceiptMapping)):  # written inline: {stat: ..., err: ...}
        assert re.search(rf"^\s*#.*\{{.*\b{key}:", text, re.M), f"{key} is not documented in the example"


def test_example_refused_without_its_env_vars(tmp_path):
    found = problems(EXAMPLE.read_text(), env={})
    assert [(p, m) for p, _l, m in found] == [
        ("esmes[0].password_env", "environment variable APP1_PASSWORD is not set"),
        ("devices[0].password_env", "environment variable GOIP1_PASSWORD is not set"),
    ]


def test_demo_config(tmp_path):
    cfg = default_demo_config(tmp_path, smpp_port=2999)
    assert cfg.smpp.listeners == (Listener("127.0.0.1", 2999),)
    (demo,) = cfg.esmes
    assert cfg.esme("demo") is demo
    assert demo.check_password("demo") and not demo.check_password("demo2")
    assert demo.allowed_ips == LOOPBACK_NETWORKS and demo.allows("127.0.0.1") and not demo.allows("10.0.0.1")
    assert (demo.max_binds, demo.throughput, demo.enabled) == (10, 0.0, True)
    assert cfg.limits.queue_depth == 200_000
    assert cfg.store == StoreConfig(path=tmp_path / "bridge.sqlite3", synchronous="full")
    assert cfg.admin == AdminConfig(host="127.0.0.1", port=8025, token=None)
    assert default_demo_config(tmp_path).smpp.listeners[0].port == 2775


# --------------------------------------------------------------------------------------------
# Defaults and the model


def test_defaults(tmp_path):
    cfg = load(MINIMAL, base_dir=tmp_path)
    assert cfg.smpp == SmppConfig(
        system_id="smpp-bridge",
        listeners=(Listener("0.0.0.0", 2775, None),),
        timers=Timers(10, 30, 120, 10, 2),
        window=10,
        max_connections=1000,
    )
    (esme,) = cfg.esmes
    assert esme == EsmeConfig("app1", Secret("pw"), None, LOOPBACK_NETWORKS, 4, 0.0, True)
    assert cfg.store == StoreConfig(tmp_path / "data" / "bridge.sqlite3", "full", 600.0)
    assert cfg.limits == Limits(10_000)
    assert cfg.admin == AdminConfig("127.0.0.1", 8025, None)
    assert cfg.logging == LoggingConfig("info", "text")
    assert isinstance(cfg.smpp.timers.enquire_link, float)


def test_sections_with_no_value_mean_defaults():
    cfg = load("smpp:\n  timers:\nstore:\nlimits:\nadmin:\nlogging:\n" + MINIMAL)
    assert cfg.smpp == SmppConfig() and cfg.limits == Limits()


def test_esme_lookup_and_model_is_frozen():
    cfg = load(MINIMAL + "  - system_id: app2\n    password: pw2\n")
    assert cfg.esme("app2").password.reveal() == "pw2"
    assert cfg.esme("nobody") is None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.limits = Limits()
    assert hash(cfg) == hash(load(MINIMAL + "  - system_id: app2\n    password: pw2\n"))


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    path = tmp_path / "etc" / "bridge.yaml"
    path.parent.mkdir()
    path.write_text(MINIMAL + "store:\n  path: db/bridge.sqlite3\n  synchronous: normal\n  partial_timeout: 30\n")
    path.chmod(0o600)
    cfg = load_config(path)
    assert cfg.store == StoreConfig(tmp_path / "etc" / "db" / "bridge.sqlite3", "normal", 30.0)


def test_full_document(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("c")
    key.write_text("k")
    cfg = load(
        f"""\
smpp:
  system_id: gw1
  listeners:
    - {{host: "::", port: 0}}
    - host: 127.0.0.1
      port: 3550
      tls: {{cert: c.pem, key: k.pem}}
  timers: {{session_init: 1.5, enquire_link: 5, inactivity: 20, response: 0.5, unbind_grace: 1}}
  window: 50
  max_connections: 20
esmes:
  - system_id: a
    password_hash: "{HASH}"
    allowed_ips: ["10.0.0.0/8", "::1", 192.168.1.7]
    max_binds: 1
    throughput: 2.5
    enabled: false
limits: {{queue_depth: 5}}
admin: {{host: 0.0.0.0, port: 9000, token_env: TOK}}
logging: {{level: DEBUG, format: json}}
""",
        env={"TOK": "t" * 16},
        base_dir=tmp_path,
    )
    assert cfg.smpp.system_id == "gw1"
    assert cfg.smpp.listeners == (Listener("::", 0), Listener("127.0.0.1", 3550, TlsConfig(cert, key)))
    assert cfg.smpp.timers == Timers(1.5, 5, 20, 0.5, 1)
    assert (cfg.smpp.window, cfg.smpp.max_connections) == (50, 20)
    (a,) = cfg.esmes
    assert a.allowed_ips == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("192.168.1.7/32"),
    )
    assert (a.max_binds, a.throughput, a.enabled) == (1, 2.5, False)
    assert a.check_password("hashed") and not a.check_password("hashes")
    assert cfg.limits.queue_depth == 5
    assert cfg.admin.token.reveal() == "t" * 16 and cfg.admin.port == 9000
    assert cfg.logging == LoggingConfig("debug", "json")


def test_yaml_merge_keys_share_esme_settings():
    cfg = load(
        """\
esmes:
  - &a
    system_id: a
    password: pa
    max_binds: 2
  - <<: *a
    system_id: b
    max_binds: 3
"""
    )
    assert cfg.esme("b").max_binds == 3 and cfg.esme("b").password.reveal() == "pa"
    assert cfg.esme("a").max_binds == 2


# --------------------------------------------------------------------------------------------
# Errors: key path, exact line, message


def test_type_error_reports_path_and_line():
    text = """\
esmes:
  - system_id: app1
    password: pw
  - system_id: app2
    password: pw
    throughput: fast
"""
    assert only_problem(text) == (
        "esmes[1].throughput",
        6,
        "expected a number of segments per second, 0 or more (0 = unlimited), got 'fast'",
    )


def test_integer_errors():
    text = """\
smpp:
  window: fast
  max_connections: "100"
limits:
  queue_depth: 1.5
admin:
  port: 0700
  host: 8000
""" + MINIMAL
    assert problems(text) == [
        ("smpp.window", 2, "expected an integer from 1 to 1000, got 'fast'"),
        ("smpp.max_connections", 3, "expected an integer of at least 1, got '100' (remove the quotes)"),
        ("limits.queue_depth", 5, "expected an integer of at least 1, got 1.5"),
        (
            "admin.port",
            7,
            "expected an integer from 0 to 65535, got 0700 which YAML reads as octal 448; drop the leading zero",
        ),
        ("admin.host", 8, "expected an IP address or host name, got 8000 (put the value in quotes)"),
    ]


def test_range_errors():
    text = """\
smpp:
  listeners:
    - port: 65536
    - port: -1
  window: 1001
  timers:
    session_init: 0
    response: -2
    unbind_grace: .inf
""" + MINIMAL
    assert problems(text) == [
        ("smpp.listeners[0].port", 3, "expected an integer from 0 to 65535, got 65536"),
        ("smpp.listeners[1].port", 4, "expected an integer from 0 to 65535, got -1"),
        ("smpp.window", 5, "expected an integer from 1 to 1000, got 1001"),
        ("smpp.timers.session_init", 7, "expected a number of seconds greater than 0, got 0"),
        ("smpp.timers.response", 8, "expected a number of seconds greater than 0, got -2"),
        ("smpp.timers.unbind_grace", 9, "expected a number of seconds greater than 0, got inf"),
    ]


def test_inactivity_must_exceed_enquire_link():
    text = "smpp:\n  timers:\n    enquire_link: 60\n    inactivity: 60\n" + MINIMAL
    path, line, message = only_problem(text)
    assert (path, line) == ("smpp.timers.inactivity", 4)
    assert "greater than enquire_link" in message


def test_enum_and_bool_errors():
    text = """\
store:
  synchronous: off
logging:
  level: verbose
  format: xml
esmes:
  - system_id: app1
    password: pw
    enabled: "maybe"
"""
    assert problems(text) == [
        (
            "store.synchronous",
            2,
            "expected one of 'full', 'normal', got false (YAML reads unquoted yes/no/on/off/true/false "
            "as booleans; put the value in quotes)",
        ),
        ("logging.level", 4, "expected one of 'debug', 'info', 'warning', 'error', got 'verbose'"),
        ("logging.format", 5, "expected one of 'text', 'json', got 'xml'"),
        ("esmes[1-1].enabled".replace("1-1", "0"), 9, "expected true or false, got 'maybe'"),
    ]


def test_system_id_rules():
    text = """\
smpp:
  system_id: a-very-long-system-id
esmes:
  - system_id: sixteen-chars-id
    password: pw
  - system_id: 12345
    password: pw
  - system_id: "has space"
    password: pw
  - password: pw
"""
    assert problems(text) == [
        (
            "smpp.system_id",
            2,
            "expected at most 15 characters (SMPP system_id is 16 octets with the NUL), got 21: 'a-very-long-system-id'",
        ),
        (
            "esmes[0].system_id",
            4,
            "expected at most 15 characters (SMPP system_id is 16 octets with the NUL), got 16: 'sixteen-chars-id'",
        ),
        ("esmes[1].system_id", 6, "expected a system_id (1..15 characters), got 12345 (put the value in quotes)"),
        ("esmes[2].system_id", 8, "expected printable ASCII without spaces, got 'has space'"),
        ("esmes[3].system_id", 10, "missing: expected a system_id (1..15 characters)"),
    ]


def test_duplicate_system_id():
    text = MINIMAL + "  - system_id: app2\n    password: pw\n  - system_id: app1\n    password: pw\n"
    assert only_problem(text) == ("esmes[2].system_id", 6, "duplicate system_id 'app1' (first used at line 2)")


def test_password_source_rules():
    text = f"""\
esmes:
  - system_id: none
  - system_id: two
    password: pw
    password_hash: "{HASH}"
  - system_id: long
    password: "123456789"
  - system_id: number
    password: 12345678
  - system_id: badhash
    password_hash: "pbkdf2_sha256$12000$abc"
"""
    found = problems(text)
    assert found[:4] == [
        (
            "esmes[0]",
            2,
            "missing password: expected exactly one of password, password_hash, password_env, password_file",
        ),
        ("esmes[1].password_hash", 5, "expected exactly one password source, got 2: password, password_hash"),
        (
            "esmes[2].password",
            7,
            "password is 9 characters long; SMPP 3.4 allows at most 8 (9 octets with the terminating NUL)",
        ),
        ("esmes[3].password", 9, "expected a string, got an integer (put the value in quotes)"),
    ]
    path, line, message = found[4]
    assert (path, line) == ("esmes[4].password_hash", 11)
    assert message.startswith("expected a hash made by `smpp-bridge hash-password`: ")
    assert len(found) == 5


def test_allowed_ips_errors():
    text = """\
esmes:
  - system_id: app1
    password: pw
    allowed_ips:
      - 127.0.0.1
      - 10.1.2.3/8
      - bogus
      - 5
  - system_id: app2
    password: pw
    allowed_ips: []
  - system_id: app3
    password: pw
    allowed_ips: 10.0.0.0/8
"""
    assert problems(text) == [
        ("esmes[0].allowed_ips[1]", 6, "'10.1.2.3/8' has host bits set (did you mean '10.0.0.0/8'?)"),
        ("esmes[0].allowed_ips[2]", 7, "expected an IP address or network like 10.0.0.0/8 or \"::1\", got 'bogus'"),
        ("esmes[0].allowed_ips[3]", 8, "expected an IP address or network, got 5 (put the value in quotes)"),
        (
            "esmes[1].allowed_ips",
            11,
            "expected at least one address or network, got an empty list "
            "(to stop this ESME binding, set enabled: false)",
        ),
        (
            "esmes[2].allowed_ips",
            14,
            "expected a list of IP addresses or networks (CIDR), e.g. [127.0.0.1, 10.0.0.0/8], got '10.0.0.0/8'",
        ),
    ]


def test_listener_errors(tmp_path):
    (tmp_path / "cert.pem").write_text("c")
    text = """\
smpp:
  listeners:
    - host: "bad host"
      port: 2775
    - host: 0.0.0.0
    - port: 2775
      host: "bad host"
    - port: 3550
      tls: {cert: cert.pem, key: missing.pem}
    - port: 3551
      tls: {cert: cert.pem}
""" + MINIMAL
    assert problems(text, base_dir=tmp_path) == [
        ("smpp.listeners[0].host", 3, "expected an IP address or host name, got 'bad host'"),
        ("smpp.listeners[1].port", 5, "missing: expected a TCP port number (0..65535), e.g. 2775, or 3550 for TLS"),
        ("smpp.listeners[2].host", 7, "expected an IP address or host name, got 'bad host'"),
        ("smpp.listeners[3].tls.key", 9, f"file not found: {tmp_path / 'missing.pem'}"),
        ("smpp.listeners[4].tls.key", 11, "missing: expected the path of the private key file (PEM)"),
    ]


def test_listener_that_is_not_a_mapping():
    text = "smpp:\n  listeners:\n    - 2775\n" + MINIMAL
    assert only_problem(text) == (
        "smpp.listeners[0]",
        3,
        "expected a listener (a mapping with host, port, tls), got 2775",
    )


def test_duplicate_listener():
    text = "smpp:\n  listeners:\n    - port: 2775\n    - port: 2775\n" + MINIMAL
    assert only_problem(text) == ("smpp.listeners[1].port", 4, "duplicate listener 0.0.0.0:2775 (also at line 3)")


def test_empty_listeners_and_wrong_shapes():
    text = """\
smpp:
  listeners: []
  timers: 5
store: [a, b]
""" + MINIMAL
    assert problems(text) == [
        ("smpp.listeners", 2, "expected at least one listener, got an empty list"),
        ("smpp.timers", 3, "expected a mapping, got 5"),
        ("store", 4, "expected a mapping, got a list"),
    ]


def test_esmes_required_and_shape():
    assert problems("smpp:\n  window: 5\n") == [
        ("esmes", None, "missing: expected a list of ESMEs (the applications allowed to bind), at least one")
    ]
    assert problems("") == problems("# nothing here\n") == problems("smpp:\n  window: 5\n")
    assert problems("esmes: []\n") == [
        ("esmes", 1, "expected a list of ESMEs (the applications allowed to bind), at least one, got an empty list")
    ]
    assert problems("esmes:\n  app1:\n    password: pw\n") == [
        (
            "esmes",
            2,
            "expected a list of ESMEs (the applications allowed to bind), at least one, got a mapping "
            "(start each ESME with '- system_id: ...')",
        )
    ]
    assert problems("esmes:\n  - just-a-name\n") == [
        ("esmes[0]", 2, "expected an ESME (a mapping with system_id, password ...), got 'just-a-name'")
    ]
    assert problems("- a\n- b\n") == [
        (
            "",
            1,
            "expected a mapping of sections (smpp, esmes, devices, connectors, routes, scheduler, receipts, inbound, store, "
            "limits, admin, logging), got a list",
        )
    ]


def test_unknown_keys_with_suggestions():
    text = """\
smpp:
  windw: 5
  timers:
    enquire: 5
esmes:
  - system_id: app1
    password: pw
    thruput: 5
    colour: blue
esme: []
"""
    found = problems(text)
    assert found == [
        ("smpp.windw", 2, "unknown key 'windw' (did you mean 'window'?)"),
        ("smpp.timers.enquire", 4, "unknown key 'enquire' (did you mean 'enquire_link'?)"),
        ("esmes[0].thruput", 8, "unknown key 'thruput' (did you mean 'throughput'?)"),
        (
            "esmes[0].colour",
            9,
            "unknown key 'colour' (known keys: system_id, password, password_hash, password_env, "
            "password_file, allowed_ips, max_binds, throughput, enabled, default_route, mo_long, receipts, "
            "data_coding_1, api_key, api_key_env, api_key_file, receipt_url, inbound_url, webhook_secret, "
            "webhook_secret_env, webhook_secret_file, deliver_via)",
        ),
        ("esme", 10, "unknown key 'esme' (did you mean 'esmes'?)"),
    ]


def test_duplicate_key():
    text = "limits:\n  queue_depth: 5\n  queue_depth: 6\n" + MINIMAL
    assert only_problem(text) == ("limits.queue_depth", 3, "duplicate key 'queue_depth' (first given at line 2)")


def test_yaml_syntax_error_has_the_line():
    text = "esmes:\n  - system_id: app1\n    password: pw\n    allowed_ips: [127.0.0.1, ::1]\n"
    path, line, message = only_problem(text)
    assert (path, line) == ("", 4)
    assert message.startswith("YAML syntax error: ")
    assert 'must be quoted' in message

    path, line, message = only_problem("limits:\n\tqueue_depth: 5\n")
    assert line == 2 and "tabs" in message

    path, line, message = only_problem(MINIMAL + "---\nlimits: {}\n")
    assert line == 4 and "single document" in message


def test_many_errors_collected_in_one_pass_and_formatted():
    text = """\
smpp:
  window: 0
esmes:
  - system_id: app1
    password: pw
    max_binds: many
store:
  synchronous: fast
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="/etc/bridge.yaml")
    err = info.value
    assert err.issues == [
        ConfigIssue("smpp.window", 2, "expected an integer from 1 to 1000, got 0"),
        ConfigIssue("esmes[0].max_binds", 6, "expected an integer from 1 to 1000, got 'many'"),
        ConfigIssue("store.synchronous", 8, "expected one of 'full', 'normal', got 'fast'"),
    ]
    assert str(err).splitlines() == [
        "/etc/bridge.yaml:2: smpp.window: expected an integer from 1 to 1000, got 0",
        "/etc/bridge.yaml:6: esmes[0].max_binds: expected an integer from 1 to 1000, got 'many'",
        "/etc/bridge.yaml:8: store.synchronous: expected one of 'full', 'normal', got 'fast'",
    ]


def test_issue_format_without_line_or_path():
    assert ConfigIssue("esmes", None, "missing").format("f.yaml") == "f.yaml: esmes: missing"
    assert ConfigIssue("", 3, "bad").format("f.yaml") == "f.yaml:3: bad"


# --------------------------------------------------------------------------------------------
# Secrets


def test_password_from_env():
    text = "esmes:\n  - system_id: app1\n    password_env: APP1_PW\n"
    cfg = load(text, env={"APP1_PW": "fromenv"})
    assert cfg.esmes[0].password.reveal() == "fromenv"
    assert only_problem(text, env={}) == ("esmes[0].password_env", 3, "environment variable APP1_PW is not set")
    assert only_problem(text, env={"APP1_PW": "much-too-long"}) == (
        "esmes[0].password_env",
        3,
        "the value of environment variable APP1_PW is 13 characters long; "
        "SMPP 3.4 allows at most 8 (9 octets with the terminating NUL)",
    )
    assert only_problem("esmes:\n  - system_id: a\n    password_env: 1-BAD\n")[1:] == (
        3,
        "expected an environment variable name (letters, digits, _), got '1-BAD'",
    )


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("SMPP_BRIDGE_TEST_PW", "osenv")
    cfg = load("esmes:\n  - system_id: a\n    password_env: SMPP_BRIDGE_TEST_PW\n")
    assert cfg.esmes[0].password.reveal() == "osenv"


def test_password_from_file(tmp_path):
    secret = tmp_path / "app1.secret"
    secret.write_text("fromfile\n")
    secret.chmod(0o600)
    text = "esmes:\n  - system_id: app1\n    password_file: app1.secret\n"
    cfg = load(text, base_dir=tmp_path)
    assert cfg.esmes[0].password.reveal() == "fromfile"

    secret.chmod(0o644)
    path, line, message = only_problem(text, base_dir=tmp_path)
    assert (path, line) == ("esmes[0].password_file", 3)
    assert f"chmod 600 {secret}" in message and "0644" in message

    secret.unlink()
    assert only_problem(text, base_dir=tmp_path) == ("esmes[0].password_file", 3, f"file not found: {secret}")


def test_admin_token_sources(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("x" * 32 + "\n")
    token_file.chmod(0o600)
    cfg = load(f"admin:\n  host: 0.0.0.0\n  token_file: {token_file}\n" + MINIMAL)
    assert cfg.admin.token.reveal() == "x" * 32

    assert only_problem("admin:\n  host: 0.0.0.0\n" + MINIMAL) == (
        "admin.host",
        2,
        "admin HTTP on '0.0.0.0' is reachable from the network, so a token is required: "
        "set token_env or token_file (or use host 127.0.0.1)",
    )
    # loopback or disabled: no token needed
    assert load("admin:\n  host: \"::1\"\n" + MINIMAL).admin.token is None
    assert load("admin:\n  host: 0.0.0.0\n  port: 0\n" + MINIMAL).admin.enabled is False

    assert only_problem("admin:\n  host: 0.0.0.0\n  token_env: T\n" + MINIMAL, env={"T": "short"}) == (
        "admin.token_env",
        3,
        "the value of environment variable T is 5 characters; expected at least 16 (e.g. `openssl rand -hex 16`)",
    )
    assert only_problem("admin:\n  token_env: T\n  token_file: /x\n" + MINIMAL, env={"T": "y" * 16}) == (
        "admin.token_file",
        3,
        "expected at most one token source, got 2: token_env, token_file",
    )


def test_secret_hides_its_value():
    s = Secret("hunter2")
    assert repr(s) == str(s) == f"{s}" == "***"
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2") and s != Secret("hunter3")
    assert copy.deepcopy(s).reveal() == "hunter2"
    with pytest.raises(AttributeError):
        s._value = "x"
    with pytest.raises(TypeError):
        Secret(123)


def test_secrets_never_in_repr_or_str_of_config():
    cfg = load(
        "admin:\n  token: tok-tok-tok-tok-tok\nesmes:\n"
        "  - system_id: a\n    password: pw-a-123\n"
        f"  - system_id: b\n    password_hash: \"{HASH}\"\n"
    )
    for text in (repr(cfg), str(cfg), repr(cfg.esmes), str(cfg.admin), f"{cfg}"):
        assert "pw-a-123" not in text
        assert "tok-tok" not in text
        assert HASH.split("$")[3] not in text and HASH.split("$")[2] not in text
        assert "***" in text


def test_secrets_never_in_error_messages(tmp_path):
    text = "esmes:\n  - system_id: a\n    password: sekrit-too-long\n    max_binds: 0\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert "sekrit" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config_text("esmes:\n  - system_id: a\n    password_hash: sekrit\n")
    assert "sekrit" not in str(info.value)


def test_inline_secret_refused_in_group_or_world_readable_file(tmp_path):
    path = tmp_path / "bridge.yaml"
    path.write_text("admin:\n  token: tok-tok-tok-tok-tok\n" + MINIMAL)
    path.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(i.path, i.line) for i in info.value.issues] == [("admin.token", 2), ("esmes[0].password", 5)]
    message = info.value.issues[1].message
    assert f"`chmod 600 {path}`" in message and "0644" in message and "password_env or password_file" in message
    assert "token_env or token_file" in info.value.issues[0].message

    path.chmod(0o640)
    with pytest.raises(ConfigError, match="its group"):
        load_config(path)

    path.chmod(0o600)
    assert load_config(path).esmes[0].password.reveal() == "pw"


def test_readable_file_without_inline_secrets_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("SMPP_BRIDGE_TEST_B", "from-env")
    path = tmp_path / "bridge.yaml"
    path.write_text(
        f"esmes:\n  - system_id: a\n    password_hash: \"{HASH}\"\n"
        "  - system_id: b\n    password_env: SMPP_BRIDGE_TEST_B\n"
    )
    path.chmod(0o644)
    cfg = load_config(path)
    assert cfg.esme("a").password_hash == HASH
    assert cfg.esme("b").password.reveal() == "from-env"


def test_load_config_unreadable_or_missing(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read the config file: No such file or directory"
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"esmes:\n  - system_id: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert [(i.line, i.message) for i in info.value.issues] == [(2, "expected UTF-8 text, found byte 0xff")]


# --------------------------------------------------------------------------------------------
# Authentication helpers


def test_check_password_uses_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    plain = EsmeConfig("a", password=Secret("pw"))
    assert plain.check_password("pw") and not plain.check_password("px")
    assert calls == [(b"pw", b"pw"), (b"px", b"pw")]

    calls.clear()
    hashed = EsmeConfig("b", password_hash=HASH)
    assert hashed.check_password("hashed") and not hashed.check_password("nope")
    assert len(calls) == 2 and all(isinstance(a, bytes) and len(a) == 32 for a, _b in calls)

    assert not EsmeConfig("c").check_password("")
    assert not EsmeConfig("d", password_hash="garbage").check_password("x")


def test_allows():
    esme = EsmeConfig(
        "a", allowed_ips=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    )
    assert esme.allows("10.1.2.3")
    assert esme.allows("::ffff:10.1.2.3")  # IPv4 peer on a dual-stack socket
    assert esme.allows("2001:db8::1")
    assert esme.allows(ipaddress.ip_address("10.9.9.9"))
    assert not esme.allows("11.0.0.1")
    assert not esme.allows("127.0.0.1")
    assert not esme.allows("not-an-ip")
    assert not esme.allows("")
    default = EsmeConfig("b")
    assert default.allows("127.0.0.1") and default.allows("::1") and not default.allows("127.0.0.2")


def test_config_constructed_directly_accepts_lists():
    cfg = Config(esmes=[EsmeConfig("x", allowed_ips=[ipaddress.ip_network("0.0.0.0/0")])])
    assert isinstance(cfg.esmes, tuple) and isinstance(cfg.esmes[0].allowed_ips, tuple)
    assert cfg.esme("x").allows("8.8.8.8")


def test_module_exports():
    for name in config_module.__all__:
        assert hasattr(config_module, name)


def test_an_esme_api_key_is_a_secret_with_sources(tmp_path):
    cfg = load(MINIMAL + "    api_key: a-long-api-key-0123456789\n")
    assert cfg.esme("app1").api_key.reveal() == "a-long-api-key-0123456789"
    assert "a-long-api-key" not in repr(cfg.esme("app1"))
    cfg = load(MINIMAL + "    api_key_env: APP1_KEY\n", env={"APP1_KEY": "k" * 16})
    assert cfg.esme("app1").api_key.reveal() == "k" * 16
    path, _, message = only_problem(MINIMAL + "    api_key: short\n")
    assert path == "esmes[0].api_key" and "at least 16" in message
    path, _, message = only_problem(MINIMAL + "    api_key: a-long-api-key-0123456789\n    api_key_env: X\n")
    assert "at most one api_key source" in message


def test_admin_tls_needs_readable_cert_and_key(tmp_path):
    found = problems(MINIMAL + f"admin:\n  tls:\n    cert: {tmp_path}/nope.pem\n    key: {tmp_path}/nope.key\n")
    assert [(p, m) for p, _, m in found] == [("admin.tls.cert", f"file not found: {tmp_path}/nope.pem"),
                                             ("admin.tls.key", f"file not found: {tmp_path}/nope.key")]


def test_esme_webhooks_need_a_secret_and_real_urls():
    secret = "w" * 16
    cfg = load(MINIMAL + f"    receipt_url: https://app.example/r\n    webhook_secret: {secret}\n    deliver_via: both\n")
    e = cfg.esme("app1")
    assert e.outbox_channels("receipt") == ("smpp", "webhook") and e.outbox_channels("mo") == ("smpp",)
    assert secret not in repr(e)
    cases = {
        "    receipt_url: ftp://app.example/r\n    webhook_secret: " + secret + "\n":
            ("esmes[0].receipt_url", "expected an http:// or https:// URL"),
        "    inbound_url: https://app.example/i\n": ("esmes[0].inbound_url", "needs webhook_secret_env"),
        "    webhook_secret: " + secret + "\n": ("esmes[0].webhook_secret", "no use without receipt_url"),
        "    receipt_url: https://app.example/r\n    webhook_secret: short\n":
            ("esmes[0].webhook_secret", "at least 16"),
    }
    for extra, (path, text) in cases.items():
        got_path, _, message = only_problem(MINIMAL + extra)
        assert got_path == path and text in message, (extra, message)
