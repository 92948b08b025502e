"""A device kind is one folder: every registered kind has its four pieces and a docs page, and
nothing outside bridge/devices/ names a kind (so adding a kind touches only its folder and the
registry)."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest

from bridge.devices import registry
from bridge.devices.base import Capabilities, DriverBase

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", registry.KINDS)
def test_every_kind_has_its_folder_pieces_and_a_docs_page(kind: str) -> None:
    assert isinstance(registry.capabilities(kind), Capabilities)
    cfg = registry.config(kind)
    assert cfg.KEYS and callable(cfg.load) and callable(cfg.build_driver)
    driver = importlib.import_module(f"bridge.devices.{kind}.driver")
    classes = [c for c in vars(driver).values()
               if isinstance(c, type) and issubclass(c, DriverBase) and getattr(c, "kind", None) == kind]
    assert len(classes) == 1, f"{kind}: expected one driver class with kind = {kind!r}"
    assert classes[0].declared is registry.capabilities(kind)
    assert classes[0].capabilities == registry.capabilities(kind).flags
    emulator = registry.emulator(kind)
    assert any(name.endswith("Emulator") for name in vars(emulator)), f"{kind}: no emulator class"
    assert callable(emulator.add_arguments) and callable(emulator.from_cli)
    assert emulator.DEFAULT_PORT is None or 0 < emulator.DEFAULT_PORT < 65536
    assert (ROOT / registry.docs_page(kind)).is_file()


# Files still naming a kind, and why. Shrink this; never grow it.
NOT_YET = {
    # demo_config(): a ready config with one goip_http device (data, not a branch on a kind).
    "bridge/config/demo.py",
}


def test_no_module_outside_the_devices_folder_names_a_kind() -> None:
    pattern = "|".join(re.escape(k) for k in registry.KINDS)
    found = subprocess.run(
        ["git", "grep", "-n", "-E", f"[\"'](({pattern}))[\"']", "--", "bridge/*.py",
         ":!bridge/devices/**", ":!bridge/emulators/**"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout.splitlines()
    assert {line.split(":", 1)[0] for line in found} <= NOT_YET, found


def test_an_unknown_kind_gets_a_clear_error() -> None:
    class Device:
        name, kind = "x", "nokia"

    with pytest.raises(ValueError, match="no driver for kind 'nokia'"):
        registry.build_driver(Device())


@pytest.mark.parametrize("kind", registry.KINDS)
def test_smpp_bridge_emulate_offers_every_kind_with_its_own_options(kind: str) -> None:
    from bridge import cli

    extra = ["--password", "pw"] if registry.emulator(kind).DEFAULT_PORT is None else ["--port", "0"]
    args = cli.build_parser().parse_args(["emulate", kind, "--seed", "7", *extra])
    assert args.kind == kind and args.seed == 7
    emulator, what = registry.emulator(kind).from_cli(args)
    assert type(emulator).__name__.endswith("Emulator") and what


def test_emulate_goip_is_the_goip_http_emulator_and_options_belong_to_their_kind(capsys) -> None:
    from bridge import cli

    parser = cli.build_parser()
    args = parser.parse_args(["emulate", "goip", "--port", "0", "--lines", "3"])
    assert (args.kind, args.port, args.lines) == ("goip_http", 0, 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["emulate", "router", "--lines", "3"])
    assert "unrecognized arguments: --lines" in capsys.readouterr().err
