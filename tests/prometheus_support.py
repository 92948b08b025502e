"""A real Prometheus (Debian's ``prometheus``) scraping bridges started by a test, with the
shipped scrape job and alert rules."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from e2e_support import free_port

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
SCRAPE = ROOT / "config" / "prometheus" / "prometheus.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def prometheus_installed() -> bool:
    return Path(PROMETHEUS).exists()


class Prometheus:
    """A real Prometheus scraping bridges: ``targets`` maps a site label to an admin port."""

    def __init__(self, workdir: Path, target_port: int | None = None, *, targets: dict[str, int] | None = None,
                 rule_files: tuple[Path, ...] = (ALERTS,)) -> None:
        targets = targets or {"test": target_port}
        shipped = yaml.safe_load(SCRAPE.read_text())
        job = next(j for j in shipped["scrape_configs"] if j["job_name"] == "smpp-bridge")
        job["scrape_interval"] = "1s"
        job["scrape_timeout"] = "1s"
        job["static_configs"] = [
            {"targets": [f"127.0.0.1:{port}"], "labels": {"site": site}} for site, port in targets.items()
        ]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in rule_files],
            "scrape_configs": [job],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.logfile = workdir / "prometheus.log"
        self.wait(lambda: httpx.get(self.url + "/-/ready", timeout=1).status_code == 200, "Prometheus ready")

    def wait(self, predicate, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("Prometheus exited:\n" + self.logfile.read_text())
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s\n{self.logfile.read_text()[-2000:]}")
            time.sleep(0.2)

    def query(self, expr: str) -> dict:
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        return r.json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


