"""A real Prometheus scrapes a real bridge with emulator traffic; every shipped dashboard query
and every shipped alert expression must parse and return data.

Needs the Debian package ``prometheus`` (``/usr/bin/prometheus``, ``/usr/bin/promtool``), which
``.ci/run`` installs; skipped with a reason when it is missing.

Alert expressions compare against thresholds, so on a healthy bridge they are (rightly) empty.
Each is therefore evaluated twice: as written (it must parse and evaluate), and with every
comparison turned into a ``bool`` comparison (``x > 600`` -> ``x > bool 600``), which keeps
every series and gives 0 or 1: non-empty only if every metric and label the alert relies on
exists. Prometheus itself also evaluates the rule file every second, and every rule must
report health "ok".
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from e2e_support import (
    BridgeProcess,
    EmulatorProcess,
    connector_yaml,
    smsc_emulator,
    client,
    goip_config,
    receive_deliver_sm,
    submit,
    with_admin,
)
from prometheus_support import ALERTS, PROMETHEUS, SCRAPE, Prometheus

ROOT = Path(__file__).resolve().parents[2]
FLEET_SCRAPE = ROOT / "config" / "fleet" / "prometheus.yml"
DASHBOARD = ROOT / "config" / "grafana" / "smpp-bridge.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

needs_prometheus = pytest.mark.skipif(
    not Path(PROMETHEUS).exists(),
    reason="Prometheus is not installed (Debian: apt-get install prometheus); CI installs it",
)
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(),
    reason="promtool is not installed (Debian package prometheus); CI installs it",
)

# Grafana's built-in and dashboard variables, as the test substitutes them.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$instance": ".*",
    "$site": ".*",
}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, variables substituted."""
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((p["title"], substitute(t["expr"])))

    walk(dash["panels"])
    return out


def variable_queries() -> list[tuple[str, str]]:
    """label_values(metric, label) of the dashboard's variables as PromQL."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((\w+(?:\{[^}]*\})?),\s*(\w+)\)", q)
        assert m, f"variable {v['name']}: unexpected query {q!r}"
        out.append((f"variable {v['name']}", substitute(f"count by ({m.group(2)}) ({m.group(1)})")))
    return out


def substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARS[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)")


def with_bool(expr: str) -> str:
    """Every comparison outside label matchers and strings becomes a bool comparison."""
    out = []
    depth = 0  # inside {...}
    quote = ""
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            out.append(c)
            if c == "\\":
                out.append(expr[i + 1])
                i += 2
                continue
            if c == quote:
                quote = ""
            i += 1
            continue
        if c in "\"'`":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0:
            m = COMPARISON.match(expr, i)
            if m:
                op = m.group(1)
                rest = expr[m.end():]
                out.append(op if rest.lstrip().startswith("bool") else f"{op} bool")
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def test_with_bool_leaves_label_matchers_alone():
    assert with_bool('a{s=~"x|y",t!="z"} == 1') == 'a{s=~"x|y",t!="z"} == bool 1'
    assert with_bool("a > 100 and deriv(a[15m]) > 0") == "a > bool 100 and deriv(a[15m]) > bool 0"
    assert with_bool("a / b < 0.1") == "a / b < bool 0.1"
    assert with_bool("a >= bool 2") == "a >= bool 2"


@needs_promtool
def test_promtool_accepts_the_rules_and_the_scrape_config():
    rules = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout
    for scrape in (SCRAPE, FLEET_SCRAPE):
        config = subprocess.run([PROMTOOL, "check", "config", str(scrape)], capture_output=True, text=True,
                                cwd=scrape.parent)
        assert config.returncode == 0, config.stdout + config.stderr


def test_the_dashboard_asks_for_its_data_source_on_import_and_filters_by_site():
    """Grafana's import asks for each ``__inputs`` entry and puts the choice wherever the file
    says ``${NAME}``: every such reference must be declared, and the site selector must drive
    every query (a fleet dashboard that mixes sites would mislead)."""
    text = DASHBOARD.read_text()
    dash = json.loads(text)
    declared = {i["name"] for i in dash["__inputs"] if i["type"] == "datasource"}
    assert declared == {"DS_PROMETHEUS"}
    used = set(re.findall(r"\$\{(DS_[A-Z_]+)\}", text))
    assert used and used <= declared
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names[:3] == ["datasource", "site", "instance"]
    raw = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            raw.extend((p["title"], t["expr"]) for t in p.get("targets", []))

    walk(dash["panels"])
    assert [t for t, expr in raw if 'site=~"$site"' not in expr] == []
    assert dash["panels"][0]["title"] == "Fleet"


def test_every_alert_says_what_to_do():
    for rule in alert_rules():
        assert rule["alert"].startswith("SmppBridge")
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 60


@pytest.mark.slow
@needs_prometheus
def test_real_prometheus_scrapes_the_bridge_and_every_query_has_data(tmp_path):
    (tmp_path / "bridge").mkdir()
    (tmp_path / "prom").mkdir()
    emulator = EmulatorProcess(lines=2, send_duration=0.1)
    # An upstream SMSC connector too, so that its series (and alerts) have data.
    smsc, smsc_port = smsc_emulator()
    connector = connector_yaml(smsc_port)
    config = with_admin(goip_config(emulator.url, lines=2, scheduler="  max_attempts: 1", extra=connector))
    bridge = BridgeProcess(tmp_path / "bridge", config)
    prom = None
    try:
        bridge.start()
        prom = Prometheus(tmp_path / "prom", bridge.admin_port)
        # Traffic: an inbound SMS (first: the inbox is polled every 10 s), messages that go out,
        # one the network refuses (a failure).
        emulator.inject(1, "+4915100000001", "hello bridge")
        c = client(bridge.port)
        c.bind_transceiver(system_id="alice", password="secret1")
        for i in range(3):
            assert submit(c, f"hello {i}".encode(), dest=f"+4917000000{i}", registered_delivery=1).status == 0
        receive_deliver_sm(c, 3)
        emulator.faults(line_errors={"1": "2172", "2": "2172"})
        assert submit(c, b"this one fails", dest="+491700000009", registered_delivery=1).status == 0
        receive_deliver_sm(c, 1)
        emulator.faults(line_errors={})

        queries = dashboard_queries() + variable_queries()
        rules = alert_rules()
        # Wait until the scrapes carry the traffic (a functional wait, not a timing bound).
        prom.wait(lambda: prom.query('sum(smpp_bridge_channel_failures_total{reason="device_failed"})')["data"]["result"]
                  and float(prom.query('sum(smpp_bridge_channel_failures_total{reason="device_failed"})')["data"]["result"][0]["value"][1]) >= 1,
                  "the failure scraped")
        prom.wait(lambda: prom.query("sum(smpp_bridge_inbound_received_total)")["data"]["result"]
                  and float(prom.query("sum(smpp_bridge_inbound_received_total)")["data"]["result"][0]["value"][1]) >= 1,
                  "the inbound SMS scraped")

        def all_have_data():
            return all(prom.query(q)["data"]["result"] for _t, q in queries) and all(
                prom.query(with_bool(r["expr"]))["data"]["result"] for r in rules
            )

        try:
            prom.wait(all_have_data, "every query with data")
        except TimeoutError:
            pass  # report per query below
        empty = []
        for title, q in queries:
            answer = prom.query(q)
            assert answer["status"] == "success", f"{title}: {q}: {answer.get('error')}"
            if not answer["data"]["result"]:
                empty.append(f"panel {title!r}: {q}")
        for rule in rules:
            answer = prom.query(rule["expr"])
            assert answer["status"] == "success", f"{rule['alert']}: {answer.get('error')}"
            data = prom.query(with_bool(rule["expr"]))
            assert data["status"] == "success", f"{rule['alert']}: {data.get('error')}"
            if not data["data"]["result"]:
                empty.append(f"alert {rule['alert']}: {with_bool(rule['expr'])}")
            # Each alert names the site it fires for (the fleet's Prometheus labels every target).
            assert all(r["metric"].get("site") == "test" for r in data["data"]["result"]), rule["alert"]
        assert not empty, "no data for:\n" + "\n".join(empty)

        # Prometheus evaluated the rule file itself: every rule healthy.
        def rules_evaluated():
            groups = httpx.get(prom.url + "/api/v1/rules", timeout=5).json()["data"]["groups"]
            got = [r for g in groups for r in g["rules"]]
            return len(got) == len(rules) and all(r.get("lastEvaluation", "").startswith("20") for r in got) and got

        evaluated = prom.wait(rules_evaluated, "rules evaluated")
        assert [r["name"] for r in evaluated if r["health"] != "ok"] == []
        # A healthy bridge fires nothing critical.
        firing = [r["name"] for r in evaluated for a in r.get("alerts", []) if a["labels"].get("severity") == "critical"]
        assert firing == []
        c.unbind()
        c.disconnect()
    finally:
        if prom is not None:
            prom.stop()
        bridge.stop()
        emulator.stop()
        smsc.stop()
