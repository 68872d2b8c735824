"""The prompt estimate's counts, made by the regular expression engine, are the ones the
per-character loop they replaced made, for any text (ASCII, any Unicode, long words)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.flow.estimate import _WORD, _text_tokens


def _by_loop(text: str) -> int:
    words = sum(1 + len(w) // 9 for w in _WORD.findall(text))
    digits = sum(c.isdigit() for c in text)
    symbols = sum(1 for c in text if not c.isalnum() and not c.isspace())
    return round(words * 1.05 + digits + symbols * 0.6)


_ascii = st.text(alphabet=st.characters(max_codepoint=127), max_size=300)
_words = st.lists(
    st.one_of(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzé", min_size=1, max_size=40),
        st.sampled_from([" ", "  ", "\n", "_", "-", "²", "٣", "12", "\x1c", "\u00a0", "ß"]),
    ),
    max_size=60,
).map("".join)


@given(st.one_of(st.text(max_size=300), _ascii, _words))
def test_the_counts_are_the_loop_s(text: str) -> None:
    assert _text_tokens(text) == _by_loop(text)
