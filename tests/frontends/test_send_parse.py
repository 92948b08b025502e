"""The send API's request parsing (sans-IO): any input is either a request or a 400 naming a
field, and the text an application sends is the text the message holds."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from bridge.frontends.http.api import FIELDS, SendRequest, form_fields, parse_send
from bridge.frontends.http.asgi import ApiError
from bridge.smpp.text import decode_short_message

NOW = 1_800_000_000.0
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=8))
def test_any_body_is_a_request_or_a_400_naming_a_field(data):
    try:
        req = parse_send(data, NOW)
    except ApiError as err:
        field = err.extra["field"]
        assert err.status == 400 and (err.error.startswith(field) or repr(field) in err.error)
    else:
        assert isinstance(req, SendRequest) and req.to and req.text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=400), st.booleans())
def test_the_stored_text_is_the_sent_text(text, flash):
    req = parse_send({"to": "+4917012345678", "text": text, "flash": flash}, NOW)
    fields = req.smpp_fields(NOW)
    assert decode_short_message(fields["data_coding"], req.body()) == text
    assert (fields["data_coding"] & 0x10 != 0) == flash


def test_a_form_takes_repeated_and_comma_separated_destinations():
    data = form_fields(b"to=%2B4917011&to=%2B4917022,%2B4917033&text=hi&text=ignored")
    assert data == {"to": ["+4917011", "+4917022", "+4917033"], "text": "hi"}
    assert parse_send(data, NOW).to == ("+4917011", "+4917022", "+4917033")
