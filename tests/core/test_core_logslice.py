"""LogSlice and where a log's bytes may be cut for decoding (dagd/core/logslice.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagd.core.logslice import LogSlice, decode, text_end


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"", 0),
        (b"abc", 3),
        ("é".encode(), 2),
        ("é".encode()[:1], 0),  # a 2-byte sequence cut after its lead byte
        (b"ab" + "€".encode()[:2], 2),  # 3-byte sequence cut after 2
        (b"ab" + "😀".encode()[:3], 2),  # 4-byte sequence cut after 3
        (b"ab" + "😀".encode(), 6),
        (b"ab\xff", 3),  # never valid: not held back
        (b"ab\xc0", 3),  # an overlong lead: never valid
        (b"\x80\x80\x80\x80", 4),  # continuation bytes with no lead
        (b"a\x80", 2),  # a stray continuation byte after ASCII
    ],
)
def test_text_end_holds_back_only_a_cut_sequence(data: bytes, kept: int) -> None:
    assert text_end(data, at_end=False) == kept
    assert text_end(data, at_end=True) == len(data)


@given(st.text(), st.lists(st.integers(min_value=1, max_value=7), max_size=20))
def test_decoding_piece_by_piece_equals_decoding_whole(text: str, sizes: list[int]) -> None:
    raw = text.encode()
    out, pos, i = "", 0, 0
    while pos < len(raw):
        piece = raw[pos : pos + (sizes[i % len(sizes)] if sizes else 5)]
        end = pos + len(piece) >= len(raw)
        n = text_end(piece, end)
        if n == 0:  # a cut sequence alone: read more before decoding
            piece = raw[pos : pos + 4]
            n = text_end(piece, pos + len(piece) >= len(raw))
        out += decode(piece[:n])
        pos += n
        i += 1
    assert out == text


def test_a_slice_is_at_its_end_only_when_final_and_read_to_the_size() -> None:
    part = LogSlice("r", "s", 1, "out", 0, b"ab", 4, final=True)
    assert (part.next_offset, part.at_end) == (2, False)
    assert LogSlice("r", "s", 1, "out", 2, b"cd", 4, final=True).at_end
    assert not LogSlice("r", "s", 1, "out", 2, b"cd", 4, final=False).at_end
