import base64
import hmac

import pytest

from bridge import passwords
from bridge.passwords import (
    DEFAULT_ITERATIONS,
    hash_password,
    parse_hash,
    smpp_password_problem,
    verify_password,
)

FAST = 1_000  # the minimum allowed; keeps the tests quick


def test_round_trip_and_wrong_password():
    stored = hash_password("s3cret", iterations=FAST)
    assert verify_password(stored, "s3cret")
    assert not verify_password(stored, "s3creT")
    assert not verify_password(stored, "")
    assert not verify_password(stored, "s3cret ")


def test_format_and_default_iterations():
    stored = hash_password("abc")
    algorithm, iterations, salt, key = stored.split("$")
    assert algorithm == "pbkdf2_sha256"
    assert int(iterations) == DEFAULT_ITERATIONS
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(key)) == 32
    assert parse_hash(stored) == (DEFAULT_ITERATIONS, base64.b64decode(salt), base64.b64decode(key))


def test_salt_is_random():
    assert hash_password("same", iterations=FAST) != hash_password("same", iterations=FAST)


def test_default_iterations_in_the_documented_band():
    # ~10-20 ms per verify on a Raspberry Pi 4 (see the module docstring)
    assert 8_000 <= DEFAULT_ITERATIONS <= 20_000


def test_stored_iteration_count_is_used():
    stored = hash_password("pw", iterations=2_000)
    assert parse_hash(stored)[0] == 2_000
    assert verify_password(stored, "pw")


@pytest.mark.parametrize(
    "stored, fragment",
    [
        ("", "4 fields"),
        ("plaintext", "4 fields"),
        ("md5$1000$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "first field"),
        ("pbkdf2_sha256$lots$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "=", "not a number"),
        ("pbkdf2_sha256$10$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "=", "between"),
        ("pbkdf2_sha256$99999999$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "=", "between"),
        ("pbkdf2_sha256$1000$not base64!$" + "A" * 43 + "=", "salt is not valid base64"),
        ("pbkdf2_sha256$1000$AAAA$" + "A" * 43 + "=", "salt is 3 bytes"),
        ("pbkdf2_sha256$1000$AAAAAAAAAAAAAAAAAAAAAA==$AAAA", "hash is 3 bytes"),
    ],
)
def test_malformed_hash_is_a_value_error(stored, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_hash(stored)
    with pytest.raises(ValueError):
        verify_password(stored, "x")


def test_malformed_hash_message_does_not_echo_it():
    with pytest.raises(ValueError) as info:
        parse_hash("hunter2$hunter2$x$y")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "password, fragment",
    [("", "empty"), ("123456789", "at most 8"), ("pässwd", "ASCII"), ("a\tb", "ASCII")],
)
def test_hash_password_refuses_what_smpp_cannot_send(password, fragment):
    with pytest.raises(ValueError, match=fragment):
        hash_password(password, iterations=FAST)


def test_smpp_password_rule():
    assert smpp_password_problem("12345678") is None
    assert smpp_password_problem("a b~") is None
    assert "9 characters" in smpp_password_problem("123456789")


@pytest.mark.parametrize("iterations", [0, 999, 10**8, 1.5, True])
def test_iterations_out_of_range(iterations):
    with pytest.raises(ValueError):
        hash_password("pw", iterations=iterations)


def test_verify_compares_with_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    stored = hash_password("pw", iterations=FAST)
    assert passwords.verify_password(stored, "pw")
    assert not passwords.verify_password(stored, "px")
    assert calls == [(bytes, bytes), (bytes, bytes)]
