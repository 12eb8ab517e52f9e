"""Lists of strings packed into one bytes blob and back, for storage that keeps many short
strings in one value (the ingest manifest's segments): one `join` and one `encode` a list,
rather than a Python call per string.

A blob begins with a tag saying how it was packed: sha256 digests as lowercase hex (64
characters each) are kept as their 32 raw bytes; other strings as UTF-8 joined by NUL, or,
where some string holds a NUL, as UTF-8 after each string's length in characters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_HEX, _JOINED, _SIZED = b"x", b"j", b"s"
_LENGTH = np.dtype("<i8")


def is_digests(blob: bytes) -> bool:
    """`blob` holds digests, as raw bytes after its tag (`join_digests` joins such blobs)."""
    return blob[:1] == _HEX


def join_digests(blobs: Sequence[bytes]) -> bytes:
    """One blob of the digests of `blobs` (each `is_digests`), in order."""
    return _HEX + b"".join(blob[1:] for blob in blobs)


def pack(strings: Sequence[str], what: str) -> bytes:
    """`strings` as one blob (`unpack` reads it back); `what` names them in errors."""
    try:
        joined = " ".join(strings)
    except TypeError:
        bad = next(i for i, s in enumerate(strings) if not isinstance(s, str))
        kind = type(strings[bad]).__name__
        reason = f"{what} at position {bad} is {kind} {strings[bad]!r}, not str"
        raise ValueError(reason) from None
    n = len(strings)
    if not n:
        return _JOINED
    if len(joined) == 65 * n - 1 and joined[64::65] == " " * (n - 1):
        digests = _digests(joined, n)
        if digests is not None:
            return _HEX + digests
    joined = "\0".join(strings)
    try:
        raw = joined.encode("utf-8")
    except UnicodeEncodeError as exc:
        reason = f"{what} {_holding(strings, exc.start)!a} is not valid Unicode text"
        raise ValueError(reason + " (a lone surrogate)") from None
    if joined.count("\0") == n - 1:
        return _JOINED + raw
    lengths = np.fromiter(map(len, strings), _LENGTH, n)
    return _SIZED + lengths.tobytes() + "".join(strings).encode("utf-8")


def _digests(joined: str, n: int) -> bytes | None:
    """The `n` digests that `joined` spells (64 characters each, a space between them) as
    raw bytes, if they are lowercase hex (so that `hex()` gives them back)."""
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    return raw if len(raw) == 32 * n and raw.hex(" ", 32) == joined else None


def _holding(strings: Sequence[str], at: int) -> str:
    """The string of `strings` that holds character `at` of their join by NUL."""
    end = 0
    for text in strings:
        end += len(text) + 1
        if at < end:
            return text
    raise IndexError(at)


def unpack(blob: bytes, n: int) -> list[str]:
    """The `n` strings `pack` wrote to `blob`."""
    if n == 0:
        return []
    view = memoryview(blob)
    tag, body = bytes(view[:1]), view[1:]
    if tag == _HEX and len(body) == 32 * n:
        return body.hex(" ", 32).split(" ")
    if tag == _JOINED:
        out = str(body, "utf-8").split("\0")
        if len(out) == n:
            return out
    if tag == _SIZED and len(body) >= 8 * n:
        ends = np.cumsum(np.frombuffer(body[: 8 * n], dtype=_LENGTH)).tolist()
        text = str(body[8 * n :], "utf-8")
        if ends[-1] == len(text):
            return [text[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    raise ValueError(f"{n} strings packed as {tag!r} in {len(body)} bytes")
