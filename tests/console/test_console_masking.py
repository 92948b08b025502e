"""Property: whatever shape a config takes, the console's config page text never holds a secret."""

from __future__ import annotations

import yaml
from hypothesis import given, settings, strategies as st

from bridge.config.model import Secret
from bridge.frontends.console.views import MASK, SECRET_WORDS, masked

PLAIN_KEYS = st.sampled_from(["host", "port", "name", "lines", "url", "dir", "enabled", "channels", "caps"])
SECRET_KEYS = st.sampled_from([*SECRET_WORDS, "password_hash", "webhook_secret", "api_key", "admin_token"])
# Secrets long and odd enough not to occur by chance in the rest of the dump.
SECRET_VALUES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=24).map(lambda s: "S3" + s)


@st.composite
def tree(draw, depth: int = 0):  # type: ignore[no-untyped-def]
    """(value, secrets it holds)."""
    kind = draw(st.sampled_from(["map", "list", "leaf"] if depth < 3 else ["leaf"]))
    if kind == "leaf":
        return draw(st.one_of(st.integers(), st.booleans(), st.none(), st.sampled_from(["text", "goip1", "+49170"]))), []
    if kind == "list":
        items = [draw(tree(depth + 1)) for _ in range(draw(st.integers(0, 3)))]
        return [v for v, _ in items], [s for _, ss in items for s in ss]
    out, secrets = {}, []
    for i in range(draw(st.integers(0, 4))):  # the index keeps keys apart
        how = draw(st.sampled_from(["plain", "secret_key", "secret_value", "url_query"]))
        if how == "plain":
            value, inner = draw(tree(depth + 1))
            out[f"{draw(PLAIN_KEYS)}{i}"] = value
            secrets += inner
        elif how == "secret_key":
            value = draw(SECRET_VALUES)
            out[f"{draw(SECRET_KEYS)}{i}"] = value
            secrets.append(value)
        elif how == "secret_value":
            value = draw(SECRET_VALUES)
            out[f"{draw(PLAIN_KEYS)}{i}"] = Secret(value)
            secrets.append(value)
        else:
            value = draw(SECRET_VALUES)
            out[f"{draw(PLAIN_KEYS)}{i}"] = f"https://example.com/hook?key={value}"
            secrets.append(value)
    return out, secrets


@settings(max_examples=300, deadline=None)
@given(tree())
def test_no_secret_survives_masking(drawn):  # type: ignore[no-untyped-def]
    config, secrets = drawn
    text = yaml.safe_dump(masked(config), sort_keys=False, allow_unicode=True)
    for s in secrets:
        assert s not in text
    if secrets:
        assert MASK in text or "https://example.com/hook" in text
