"""Text every store can write."""

from __future__ import annotations


def encodable(text: str) -> bool:
    """Whether `text` can be written as UTF-8: False for lone surrogates (text decoded with
    errors="surrogateescape", or "\\udce9" built by hand), which no file or wire takes."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
