"""The console's config keys and `smpp-bridge hash-password --console`."""

from __future__ import annotations

import io
import sys

import pytest

from bridge import cli
from bridge.config.loader import load_config_text
from bridge.config.reader import ConfigError
from bridge.passwords import CONSOLE_ITERATIONS, hash_console_password, parse_hash, verify_password

BASE = """
smpp:
  listeners: [{host: 127.0.0.1, port: 0}]
store:
  path: data/b.sqlite3
esmes:
  - {system_id: a, password: pw}
"""


def load(admin: str):  # type: ignore[no-untyped-def]
    return load_config_text("admin:\n" + admin + BASE)


def test_console_keys_default_to_no_password_and_no_public_view():
    admin = load("  port: 8025\n").admin
    assert admin.console_password_hash is None and admin.console_read_only_public is False


def test_a_console_password_hash_loads_and_a_broken_one_says_how_to_make_one():
    h = hash_console_password("a long console password")
    admin = load(f"  console_password_hash: '{h}'\n  console_read_only_public: true\n").admin
    assert admin.console_password_hash == h and admin.console_read_only_public is True
    with pytest.raises(ConfigError) as err:
        load("  console_password_hash: 'plain-text-password'\n")
    text = str(err.value)
    assert "admin.console_password_hash" in text and "hash-password --console" in text
    assert "plain-text-password" not in text  # the value is never echoed


def test_hash_password_console_prints_a_slow_hash_of_a_long_password(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long console password\n"))
    assert cli.main(["hash-password", "--console"]) == 0
    out = capsys.readouterr().out.strip()
    assert parse_hash(out)[0] == CONSOLE_ITERATIONS and verify_password(out, "a long console password")
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert cli.main(["hash-password", "--console"]) == 2
    assert "at least 10" in capsys.readouterr().err
