"""A fleet of sites behind one Kannel, run from the shipped recipe (``config/fleet/``).

Two bridges ("north" and "south"), each with its own emulated GoIP, and Kannel 1.4.5 (Debian)
in front, configured by ``config/fleet/kannel.conf`` itself: only addresses, ports, files and
passwords are rewritten for the test (the third site of the recipe, "island", points at a port
where nothing listens: a site that is down from the start). What an application behind Kannel
sees is checked, as the recipe's README section promises:

* messages go to the site their prefix prefers, and come back as DLR callbacks, first type 8
  (the site accepted it) then type 1 (delivered to the phone);
* an SMS arriving at each site reaches the application through Kannel, naming its site;
* a site that stops: what it had accepted goes out after it returns, Kannel sends what another
  site may carry through that site and keeps what only the stopped site may carry until it is
  back; every message is sent exactly once and every one gets its delivery report;
* a site that throttles Kannel (ESME_RTHROTTLED): Kannel backs off and retries, nothing lost,
  nothing doubled;
* a real Prometheus with the recipe's scrape config scrapes both sites and the dashboard's fleet
  queries have a line for each site.

Needs Debian's ``kannel`` (and ``prometheus`` for the last test); ``.ci/run`` installs them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from e2e_support import BridgeProcess, EmulatorProcess, free_port, goip_config, wait_for, with_admin
from kannel_support import KannelConf, KannelRouter, kannel_installed
from prometheus_support import Prometheus, prometheus_installed

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "config" / "fleet" / "kannel.conf"
FLEET_PROMETHEUS = ROOT / "config" / "fleet" / "prometheus.yml"
DASHBOARD = ROOT / "config" / "grafana" / "smpp-bridge.json"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not kannel_installed(), reason="needs Kannel: apt-get install kannel (CI installs it)"),
]

PASSWORDS = {"north": "northpw1", "south": "southpw2"}


def site_config(name: str, emulator: EmulatorProcess, smpp_port: int, *, throughput: float = 0) -> str:
    esmes = f"""
  - system_id: kannel
    password: {PASSWORDS[name]}
    allowed_ips: [127.0.0.1]
    max_binds: 2
    throughput: {throughput}
"""
    inbox = '    inbox_poll_interval: 0.2\n    channels:\n      "2": {number: "+49' + ("1720" if name == "north" else "1520") + '0002"}'
    config = with_admin(goip_config(emulator.url, lines=2, esmes=esmes, device=inbox))
    # A fixed SMPP port: Kannel reconnects to the same address after the site comes back.
    return config.replace("port: 0\n", f"port: {smpp_port}\n", 1)


class Site:
    def __init__(self, workdir: Path, name: str, **kw: float) -> None:
        workdir.mkdir()
        self.name = name
        self.emulator = EmulatorProcess(lines=2, send_duration=0.05)
        self.smpp_port = free_port()
        self.bridge = BridgeProcess(workdir, site_config(name, self.emulator, self.smpp_port, **kw))

    def sent_texts(self) -> list[str]:
        return [s["text"] for s in self.emulator.sent()]

    def stop(self) -> None:
        self.bridge.stop()
        self.emulator.stop()


def fleet_conf(sites: dict[str, Site]) -> KannelConf:
    conf = KannelConf(RECIPE.read_text())
    for name, site in sites.items():
        conf.set("smsc", "host", "127.0.0.1", smsc_id=name)
        conf.set("smsc", "port", site.smpp_port, smsc_id=name)
        conf.set("smsc", "smsc-password", f'"{PASSWORDS[name]}"', smsc_id=name)
        conf.set("smsc", "reconnect-delay", 1, smsc_id=name)
    # The recipe's third site is down for the whole test: nothing listens on its port.
    conf.set("smsc", "host", "127.0.0.1", smsc_id="island")
    conf.set("smsc", "port", free_port(), smsc_id="island")
    conf.set("smsc", "reconnect-delay", 1, smsc_id="island")
    return conf


@pytest.fixture
def fleet(tmp_path, request):
    kw = getattr(request, "param", {})
    sites = {name: Site(tmp_path / name, name, **kw.get(name, {})) for name in ("north", "south")}
    kannel = None
    try:
        for s in sites.values():
            s.bridge.start()
        (tmp_path / "kannel").mkdir()
        kannel = KannelRouter(tmp_path / "kannel", conf=fleet_conf(sites), smsc_ids=("north", "south")).start()
        yield sites, kannel
    finally:
        if kannel is not None:
            kannel.stop()
        for s in sites.values():
            s.stop()


def reports(kannel: KannelRouter) -> dict[str, list[str]]:
    """DLR callbacks per message, in the order the application got them."""
    out: dict[str, list[str]] = {}
    for q in kannel.calls("/dlr"):
        out.setdefault(q["id"], []).append(q["status"])
    return out


def delivered(kannel: KannelRouter, ids) -> bool:  # type: ignore[no-untyped-def]
    got = reports(kannel)
    return all("1" in got.get(i, []) for i in ids)


def wait_delivered(kannel: KannelRouter, sites: dict[str, Site], ids, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    try:
        wait_for(lambda: delivered(kannel, ids), timeout=timeout)
    except TimeoutError:
        sent = {n: s.sent_texts() for n, s in sites.items()}
        raise AssertionError(
            f"not every report came: {reports(kannel)} (wanted {list(ids)}); sent {sent};\n"
            f"kannel: {kannel.smsc_states()}\n{kannel.log()[-3000:]}"
        ) from None


def test_each_prefix_goes_to_its_site_with_both_reports_and_mo_comes_back_naming_the_site(fleet):
    sites, kannel = fleet
    north, south = sites["north"], sites["south"]
    msgs = {
        "n1": ("+491701110001", "to north, via its preferred prefix"),
        "n2": ("+491701110002", "to north again"),
        "s1": ("+491501110001", "to south, via its preferred prefix"),
        "i1": ("+491801110001", "to island, which is down: another site carries it"),
    }
    for dlr_id, (to, text) in msgs.items():
        r = kannel.sendsms(to, text, dlr_id=dlr_id, **{"dlr-mask": "11"})
        assert r.status_code == 202, r.text
    wait_delivered(kannel, sites, msgs, timeout=30)
    assert sorted(north.sent_texts()) == sorted([msgs["n1"][1], msgs["n2"][1]] + ([msgs["i1"][1]] if msgs["i1"][1] in north.sent_texts() else []))
    assert msgs["s1"][1] in south.sent_texts() and msgs["s1"][1] not in north.sent_texts()
    # The island message went out exactly once, through one of the two live sites.
    assert (north.sent_texts() + south.sent_texts()).count(msgs["i1"][1]) == 1
    got = reports(kannel)
    for dlr_id in msgs:
        # 8: the site accepted it (submit_sm_resp); 1: delivered (the site's receipt). The ids in
        # both matched what Kannel stored from the submit_sm_resp.
        assert got[dlr_id][0] == "8" and got[dlr_id][-1] == "1", (dlr_id, got[dlr_id])
        assert got[dlr_id].count("1") == 1
    # Inbound at each site reaches the application through Kannel, naming the site it came from.
    north.emulator.inject(2, "+491709998877", "hello north")
    south.emulator.inject(2, "+491509998877", "hello south")
    mo = wait_for(lambda: len(kannel.calls("/mo")) >= 2 and kannel.calls("/mo"), timeout=20)
    by_text = {q["text"]: q for q in mo}
    assert by_text["hello north"]["site"] == "north" and by_text["hello north"]["to"] == "+4917200002"
    assert by_text["hello south"]["site"] == "south" and by_text["hello south"]["to"] == "+4915200002"


def test_a_stopped_site_loses_nothing_kannel_fails_over_or_keeps_and_nothing_is_doubled(fleet):
    sites, kannel = fleet
    north, south = sites["north"], sites["south"]
    # North's SIMs are out for now: what north accepts waits in north's store.
    north.emulator.faults(logout={"1": 3600, "2": 3600})
    before = {f"b{i}": (f"+49170222000{i}", f"accepted by north before it stopped {i}") for i in range(3)}
    for dlr_id, (to, text) in before.items():
        assert kannel.sendsms(to, text, dlr_id=dlr_id, **{"dlr-mask": "11"}).status_code == 202
    wait_for(lambda: all("8" in reports(kannel).get(i, []) for i in before), timeout=20)
    assert north.sent_texts() == []

    north.bridge.stop()  # the site goes away (SIGTERM, as systemd stops it)
    wait_for(lambda: all(s != "online" for s in kannel.smsc_states().get("north", ["online"])), timeout=20)
    during = {
        "f1": ("+491702220010", "north is down: south may carry this one"),
        "k1": ("+491602220011", "only north may carry this one: Kannel keeps it"),
    }
    for dlr_id, (to, text) in during.items():
        assert kannel.sendsms(to, text, dlr_id=dlr_id, **{"dlr-mask": "11"}).status_code == 202
    wait_delivered(kannel, sites, ["f1"], timeout=20)
    assert during["f1"][1] in south.sent_texts()
    assert during["k1"][1] not in south.sent_texts()

    # North comes back on the same store and address; its SIMs log in again.
    north.bridge.start()
    north.emulator.faults(login=[1, 2])
    wait_for(lambda: kannel.smsc_online("north"), timeout=30)
    wait_delivered(kannel, sites, [*before, "k1"], timeout=40)
    everything = [t for _to, t in (*before.values(), *during.values())]
    sent = Counter(north.sent_texts() + south.sent_texts())
    assert {t: sent[t] for t in everything} == dict.fromkeys(everything, 1)
    assert set(north.sent_texts()) == {t for _to, t in before.values()} | {during["k1"][1]}
    # Every message got exactly one "delivered" report, the pre-stop ones over the new binds.
    got = reports(kannel)
    assert {i: got[i].count("1") for i in (*before, *during)} == dict.fromkeys((*before, *during), 1)


@pytest.mark.parametrize("fleet", [{"south": {"throughput": 2}}], indirect=True)
def test_a_site_that_throttles_makes_kannel_back_off_and_retry_without_loss_or_doubles(fleet):
    sites, kannel = fleet
    south = sites["south"]
    texts = {f"t{i}": f"burst to south {i}" for i in range(8)}
    for i, (dlr_id, text) in enumerate(texts.items()):
        assert kannel.sendsms(f"+49150333000{i}", text, dlr_id=dlr_id, **{"dlr-mask": "11"}).status_code == 202
    wait_delivered(kannel, sites, texts, timeout=60)
    assert sorted(south.sent_texts()) == sorted(texts.values())
    metrics = httpx.get(south.bridge.admin_url + "/metrics", timeout=5).text
    throttled = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("smpp_bridge_throttled_segments_total{"))
    assert throttled >= 1  # the site did say ESME_RTHROTTLED; Kannel came back later


def test_one_prometheus_scrapes_the_fleet_and_every_site_has_its_line(fleet, tmp_path):
    sites, kannel = fleet
    if not prometheus_installed():
        pytest.skip("Prometheus is not installed (Debian: apt-get install prometheus); CI installs it")
    shipped = yaml.safe_load(FLEET_PROMETHEUS.read_text())
    assert {c["labels"]["site"] for c in shipped["scrape_configs"][0]["static_configs"]} == {"north", "south", "island"}
    (tmp_path / "prom").mkdir()
    prom = Prometheus(tmp_path / "prom", targets={n: s.bridge.admin_port for n, s in sites.items()})
    # Scraped before and after the traffic, so that the counters' increase shows.
    try:
        prom.wait(lambda: len(prom.query("up == 1")["data"]["result"]) == 2, "both sites scraped")
        for dlr_id, to in (("p1", "+491704440001"), ("p2", "+491504440002")):
            assert kannel.sendsms(to, f"scraped {dlr_id}", dlr_id=dlr_id, **{"dlr-mask": "11"}).status_code == 202
        wait_delivered(kannel, sites, ["p1", "p2"], timeout=30)
        dash = json.loads(DASHBOARD.read_text())
        rows = [i for i, p in enumerate(dash["panels"]) if p["type"] == "row"]
        assert dash["panels"][rows[0]]["title"] == "Fleet"
        fleet_row = dash["panels"][rows[0] + 1:rows[1]]
        exprs = [t["expr"].replace("$site", ".*").replace("$__rate_interval", "1m")
                 for p in fleet_row for t in p["targets"]]
        assert exprs

        def every_site_everywhere() -> bool:
            for expr in exprs:
                result = prom.query(expr)["data"]["result"]
                if {r["metric"].get("site") for r in result} != {"north", "south"}:
                    return False
            return True

        prom.wait(every_site_everywhere, "every fleet query with a line per site", timeout=60)

        def sent_by_site() -> set[str]:
            sent = prom.query('sum by (site) (increase(smpp_bridge_channel_sends_total{outcome="accepted"}[1h]))')
            return {r["metric"]["site"] for r in sent["data"]["result"] if float(r["value"][1]) > 0}

        prom.wait(lambda: sent_by_site() == {"north", "south"}, "each site's sends counted", timeout=60)
    finally:
        prom.stop()
