"""Lists of strings packed into one blob (common/string_blobs.py) come back as they went in."""

from __future__ import annotations

import hashlib

import pytest

from embedrec.common.string_blobs import is_digests, join_digests, pack, unpack


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    "strings",
    [
        [],
        [digest(str(i)) for i in range(5)],
        [digest("a").upper()],  # hex, but not as `hex()` writes it: kept as text
        ["a" * 63, "b" * 65],  # the length of two digests, but not split as two
        [digest("a")[:61] + " 00", digest("b")],  # a space, which bytes.fromhex skips
        ["1", "h", ""],
        ["plain", "é", "日本語", "🎬", "with\0nul", "\0", "", " x ", "x" * 500],
        ["\0\0", "a\0"],
    ],
)
def test_strings_pack_and_unpack_as_given(strings: list[str]) -> None:
    assert unpack(pack(strings, "id"), len(strings)) == strings


def test_digests_pack_as_32_bytes() -> None:
    hashes = [digest(str(i)) for i in range(100)]
    assert len(pack(hashes, "hash")) == 1 + 32 * 100


def test_joined_digests_unpack_in_order() -> None:
    parts = [pack([digest(f"{k}/{i}") for i in range(k + 1)], "hash") for k in range(3)]
    assert all(map(is_digests, parts))
    assert unpack(join_digests(parts), 6) == [
        digest(f"{k}/{i}") for k in range(3) for i in range(k + 1)
    ]


def test_a_string_no_file_takes_is_named() -> None:
    with pytest.raises(ValueError, match=r"id 'b\\udce9' is not valid Unicode text"):
        pack(["a\0", "ok", "b\udce9"], "id")
    with pytest.raises(ValueError, match="hash at position 1 is int 7, not str"):
        pack(["a", 7], "hash")  # type: ignore[list-item]


@pytest.mark.parametrize(
    "blob", [b"j" + b"a\0b", b"x" + b"\0" * 31, b"s" + b"\1" + b"\0" * 7, b"?"]
)
def test_a_blob_of_another_count_is_refused(blob: bytes) -> None:
    with pytest.raises(ValueError, match="strings packed as"):
        unpack(blob, 3)
