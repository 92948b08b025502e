"""`smpp-bridge demo` prints the console's address and how to log in, and that works as printed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
from test_operator_cli import interrupt, start_and_wait  # noqa: E402

from e2e_support import free_port  # noqa: E402


@pytest.mark.parametrize("site", ["goip", "mixed"])
def test_the_demo_banner_names_the_console_and_its_login_works(tmp_path, site):
    proc, lines = start_and_wait(["demo", "--site", site, "--smpp-port", "0", "--admin-port", str(free_port()),
                                  "--data-dir", str(tmp_path), "--log-level", "warning"], "Ctrl-C stops it.")
    try:
        banner = "".join(lines)
        m = re.search(r"web console: (http://127\.0\.0\.1:[0-9]+/console/) \(the demo has no admin token: "
                      r"on 127\.0\.0\.1 just press Log in", banner)
        assert m, banner
        url = m.group(1)
        with httpx.Client(timeout=10) as c:
            assert c.get(url).headers["location"].startswith("/console/login")
            r = c.post(url + "login", data={})
            assert r.status_code == 303 and r.headers["location"] == "/console/"
            page = c.get(url)
            assert page.status_code == 200 and "devices up" in page.text
    finally:
        code, err = interrupt(proc)
    assert code == 0 and "Traceback" not in err, err
