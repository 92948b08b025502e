"""Password hashing for ESME credentials.

Stored form (one string, safe to put in YAML)::

    pbkdf2_sha256$<iterations>$<salt, base64>$<derived key, base64>

PBKDF2-HMAC-SHA256 from the standard library, a 16-byte random salt, a 32-byte key.

Why DEFAULT_ITERATIONS = 12_000, far below the 600_000 that OWASP suggests for web logins:
every SMPP bind runs one verify on a small ARM board, before the peer has proved anything, so
verification cost is also a denial-of-service lever. 12_000 iterations take about 3-5 ms on
an x86 cloud VM core with SHA extensions (measured) and an estimated 10-20 ms on a Raspberry
Pi 4 (Cortex-A72, no SHA instructions, ~1.2 us per iteration from its OpenSSL sha256 speed);
a Pi 5 is faster. That keeps a bind cheap while still multiplying the cost of each offline
guess by 12_000. The iteration count is stored in each hash, so a stronger box can use
`hash_password(..., iterations=N)` and old hashes keep working.

The SMPP 3.4 password field is a C-Octet String of at most 9 octets including the NUL, i.e.
8 ASCII characters. `smpp_password_problem` states that rule once; the config loader and
`hash_password` both use it, so nobody can configure a password that no client can send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

__all__ = [
    "ALGORITHM",
    "DEFAULT_ITERATIONS",
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "SMPP_PASSWORD_MAX",
    "CONSOLE_ITERATIONS",
    "CONSOLE_PASSWORD_MIN",
    "hash_console_password",
    "hash_password",
    "parse_hash",
    "smpp_password_problem",
    "verify_password",
]

ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 12_000
# Bounds on the iteration count found in a stored hash: below MIN is too weak to bother
# hashing; above MAX one bind would pin the CPU for seconds on a Pi.
MIN_ITERATIONS = 1_000
MAX_ITERATIONS = 5_000_000
SALT_BYTES = 16
KEY_BYTES = 32  # sha256 digest size
SMPP_PASSWORD_MAX = 8  # octets, without the terminating NUL (SMPP 3.4 section 4.1.1)


def smpp_password_problem(password: str) -> str | None:
    """Why `password` cannot be an SMPP password, or None if it can.

    The message never contains the password itself.
    """
    if not password:
        return "is empty"
    if any(not (0x20 <= ord(c) <= 0x7E) for c in password):
        return "must be printable ASCII (SMPP sends it as a C-Octet String)"
    if len(password) > SMPP_PASSWORD_MAX:
        return (
            f"is {len(password)} characters long; SMPP 3.4 allows at most "
            f"{SMPP_PASSWORD_MAX} (9 octets with the terminating NUL)"
        )
    return None


def _check_iterations(iterations: object) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int):
        raise ValueError(f"iterations must be an integer, got {iterations!r}")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(
            f"iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {iterations}"
        )
    return iterations


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"the {what} is not valid base64") from None


def _derive(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8", "surrogatepass"), salt, iterations, KEY_BYTES
    )


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    """Hash an SMPP password for the `password_hash` config key.

    Raises ValueError when the password could never be sent over SMPP (empty, not printable
    ASCII, longer than 8 characters) or when `iterations` is out of range.
    """
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    problem = smpp_password_problem(password)
    if problem is not None:
        raise ValueError(f"password {problem}")
    iterations = _check_iterations(iterations)
    salt = os.urandom(SALT_BYTES)
    key = _derive(password, salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(key)}"


# The web console's password (admin.console_password_hash) is typed by a person at a login page
# that lets an address try 5 times a minute and then one guess per 2 s, so a login may cost more
# than a bind: 200_000 iterations are about 0.1 s on an x86 core and well under a second on a Pi 4,
# run off the event loop. It is not an SMPP password, so longer ones are allowed (and required).
CONSOLE_ITERATIONS = 200_000
CONSOLE_PASSWORD_MIN = 10


def hash_console_password(password: str, *, iterations: int = CONSOLE_ITERATIONS) -> str:
    """Hash a web console password for ``admin.console_password_hash`` (same stored form)."""
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    if len(password) < CONSOLE_PASSWORD_MIN:
        raise ValueError(f"password is {len(password)} characters; the console wants at least {CONSOLE_PASSWORD_MIN}")
    iterations = _check_iterations(iterations)
    salt = os.urandom(SALT_BYTES)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(_derive(password, salt, iterations))}"


def parse_hash(stored: str) -> tuple[int, bytes, bytes]:
    """Split a stored hash into (iterations, salt, key); ValueError saying what is wrong.

    The message never repeats the stored string.
    """
    if not isinstance(stored, str):
        raise ValueError("a password hash must be a string")
    parts = stored.split("$")
    if len(parts) != 4:
        raise ValueError(
            f"expected '{ALGORITHM}$<iterations>$<salt>$<hash>' "
            f"(4 fields separated by '$'), found {len(parts)} field(s)"
        )
    algorithm, iterations_text, salt_text, key_text = parts
    if algorithm != ALGORITHM:
        raise ValueError(f"the first field is not {ALGORITHM!r}")
    if not iterations_text.isascii() or not iterations_text.isdigit():
        raise ValueError("the iteration count (second field) is not a number")
    iterations = _check_iterations(int(iterations_text))
    salt = _unb64(salt_text, "salt")
    if len(salt) < 8:
        raise ValueError(f"the salt is {len(salt)} bytes; expected at least 8")
    key = _unb64(key_text, "hash")
    if len(key) != KEY_BYTES:
        raise ValueError(f"the hash is {len(key)} bytes; expected {KEY_BYTES}")
    return iterations, salt, key


def verify_password(stored: str, candidate: str) -> bool:
    """True if `candidate` matches the stored hash. Compares with hmac.compare_digest.

    Raises ValueError for a malformed stored hash (the config loader calls `parse_hash` at load
    time, so a running bridge never meets one).
    """
    iterations, salt, key = parse_hash(stored)
    return hmac.compare_digest(_derive(candidate, salt, iterations), key)
