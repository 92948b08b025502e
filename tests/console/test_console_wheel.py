"""An installed wheel carries the console's templates and static files (package data)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "bridge" / "frontends" / "console"


@pytest.mark.slow
def test_the_wheel_holds_every_template_and_static_file(tmp_path):
    # Built from a clean copy of the checkout's files: a left-over egg-info would list them anyway.
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("smpp_bridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {str(p.relative_to(ROOT)) for sub in ("templates", "static") for p in (CONSOLE / sub).iterdir()}
    assert {"bridge/frontends/console/templates/base.html", "bridge/frontends/console/static/console.js"} <= wanted
    assert wanted <= names, sorted(wanted - names)
