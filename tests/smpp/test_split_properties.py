"""Properties of splitting text into SMS parts (bridge/smpp/text.py split_text).

For any text: the parts joined are the text, every part fits one SMS of its encoding, the part
count is what the fill rule gives when nothing is refused, and a part never starts with a
character the target device refuses at the start of a text, wherever the text allows that.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.devices.goip_http.driver import GoipHttpDriver
from bridge.smpp.text import (
    GSM7_MULTI,
    GSM7_MULTI_REF16,
    GSM7_SINGLE,
    UCS2_MULTI,
    UCS2_MULTI_REF16,
    UCS2_SINGLE,
    gsm7_length,
    is_gsm7,
    split_text,
    ucs2_length,
)

GSM_CHARS = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCXYZÄÖÑÜ§¿abcxyzäöñüà^{}\\[~]|€"
texts = st.one_of(
    st.text(alphabet=GSM_CHARS, max_size=700),
    st.text(alphabet=GSM_CHARS + "ЖжЯ☺👍ç", max_size=400),
    st.text(max_size=300),
)
refused = st.sampled_from([frozenset(), frozenset("["), frozenset("[{"), frozenset("[ a")])


def fits(part: str, encoding: str, single: bool, ref_bits: int) -> bool:
    if encoding == "gsm7":
        limit = GSM7_SINGLE if single else (GSM7_MULTI if ref_bits == 8 else GSM7_MULTI_REF16)
        return gsm7_length(part) <= limit
    limit = UCS2_SINGLE if single else (UCS2_MULTI if ref_bits == 8 else UCS2_MULTI_REF16)
    return ucs2_length(part) <= limit


@settings(max_examples=400, deadline=None)
@given(texts, refused, st.sampled_from([8, 16]))
def test_parts_join_to_the_text_fit_and_avoid_refused_starts(text, avoid, ref_bits):
    split = split_text(text, ref_bits=ref_bits, avoid_start=avoid)
    assert "".join(split.parts) == text
    assert split.encoding == ("gsm7" if is_gsm7(text) else "ucs2")
    single = split.count == 1
    assert all(fits(p, split.encoding, single, ref_bits) for p in split.parts)
    assert all(p for p in split.parts) or text == ""
    for prev, part in zip(split.parts, split.parts[1:]):
        if part[0] in avoid:
            # Only when the boundary could not move: everything before it in its part is refused too.
            assert all(ch in avoid for ch in prev)
    if not avoid:
        assert split.parts == split_text(text, ref_bits=ref_bits).parts


def test_a_part_does_not_start_with_a_bracket_for_goip():
    text = "a" * 153 + "[ticket 42] " + "b" * 20
    plain = split_text(text).parts
    assert plain[1].startswith("[")  # what the fill rule alone does
    parts = split_text(text, avoid_start=GoipHttpDriver.declared.part_start_refused).parts
    assert "".join(parts) == text and len(parts) == 2
    assert not any(p.startswith("[") for p in parts[1:])
    assert parts[0] == "a" * 152 and parts[1].startswith("a[ticket")


def test_goip_http_declares_the_bracket():
    assert "[" in GoipHttpDriver.declared.part_start_refused
