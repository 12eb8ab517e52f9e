"""The slot table's columns on disk: one file of named numpy arrays after a JSON header,
each array 64-byte aligned, read back as read-only views of one memory map (nothing is
parsed or copied on open; pages load as searches touch them, and the first write after a
reopen copies a column into memory).

Layout: 8 bytes `EMBRCOL1`, the header's length (8 bytes, little-endian), the header (JSON:
`arrays`: name -> dtype, shape, offset from the data start; plus what the writer adds), zero
padding to a multiple of 64, then the arrays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from embedrec.stores.errors import CorruptStore
from embedrec.stores.faiss.columns import ABSENT, LIST, STR, Field, MetaColumns, Vocab, unset

MAGIC = b"EMBRCOL1"
ALIGN = 64
DTYPES = {"|i1", "<f8", "<i4", "<i8", "|u1"}


def _padded(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def write_arrays(path: Path, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
    layout, offset = {}, 0
    for name, array in arrays.items():
        layout[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        offset += _padded(array.nbytes)
    head = json.dumps({**header, "arrays": layout}, ensure_ascii=False).encode("utf-8")
    with path.open("wb") as fh:
        fh.write(MAGIC + len(head).to_bytes(8, "little") + head)
        fh.write(b"\0" * (_padded(16 + len(head)) - 16 - len(head)))
        for array in arrays.values():
            data = np.ascontiguousarray(array)
            fh.write(memoryview(data).cast("B") if data.size else b"")
            fh.write(b"\0" * (_padded(data.nbytes) - data.nbytes))


def read_arrays(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and the arrays (read-only views of the file's map); `CorruptStore` for a
    file of any other shape. The views are plain arrays, not `np.memmap`s: the subclass's
    Python hooks ran on every index into them (a query's metadata read took 0.53x the time
    without them); the map stays open while a view holds it."""
    size = path.stat().st_size
    raw = (
        np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
        if size
        else np.zeros(0, np.uint8)
    )
    try:
        if bytes(raw[:8]) != MAGIC:
            raise ValueError("not a column file")
        length = int.from_bytes(bytes(raw[8:16]), "little")
        header = json.loads(bytes(raw[16 : 16 + length]).decode("utf-8"))
        start = _padded(16 + length)
        arrays = {}
        for name, spec in header.pop("arrays").items():
            dtype, shape, offset = spec["dtype"], tuple(spec["shape"]), spec["offset"]
            if dtype not in DTYPES or len(shape) != 1 or offset % ALIGN or offset < 0:
                raise ValueError(f"array {name!r}: {spec}")
            nbytes = np.dtype(dtype).itemsize * shape[0]
            if start + offset + nbytes > size:
                raise ValueError(f"array {name!r} runs past the end of the file")
            at = start + offset
            arrays[name] = raw[at : at + nbytes].view(dtype)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise CorruptStore(f"{path}: not a readable column file ({exc})") from None
    return header, arrays


def columns_arrays(columns: MetaColumns) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What `write_arrays` saves of `columns`: only the arrays a field uses."""
    n = columns.n
    arrays: dict[str, np.ndarray] = {}
    for i, field in enumerate(columns.fields.values()):
        arrays[f"{i}.kind"] = field.kind[:n]
        if field.num.strides != (0,):
            arrays[f"{i}.num"] = field.num[:n]
        if field.code.strides != (0,):
            arrays[f"{i}.code"] = field.code[:n]
        list_slots, list_codes = field.lists()
        if list_slots.size:
            arrays[f"{i}.list_slots"], arrays[f"{i}.list_codes"] = list_slots, list_codes
        if len(field.vocab):
            arrays[f"{i}.vocab"], arrays[f"{i}.vocab_offsets"] = field.vocab.pack()
    return {"rows": n, "fields": list(columns.fields)}, arrays


def saved_columns(path: Path, slots: int) -> MetaColumns:
    """The columns saved in `path` for `slots` slots, checked enough that no later read
    can fail on them."""
    header, arrays = read_arrays(path)
    names = header.get("fields")
    if header.get("rows") != slots or not isinstance(names, list):
        raise CorruptStore(f"{path}: holds {header.get('rows')!r} rows, the store {slots}")
    fields = {}
    for i, name in enumerate(names):
        try:
            fields[name] = _field(arrays, str(i), slots)
        except (KeyError, ValueError) as exc:
            raise CorruptStore(f"{path}: field {name!r} is damaged ({exc})") from None
    return MetaColumns(slots, fields)


def _checked(array: np.ndarray, dtype: str, size: int | None = None) -> np.ndarray:
    if array.dtype != np.dtype(dtype) or (size is not None and array.size != size):
        raise ValueError(f"a {array.dtype}[{array.size}] array where {dtype}[{size}] belongs")
    return array


def _field(arrays: dict[str, np.ndarray], i: str, n: int) -> Field:
    field = Field()
    field.kind = _checked(arrays[f"{i}.kind"], "|i1", n)
    if field.kind.size and not (field.kind.min() >= ABSENT and field.kind.max() <= LIST):
        raise ValueError("unknown value kinds")
    num, code = arrays.get(f"{i}.num"), arrays.get(f"{i}.code")
    field.num = unset(np.float64, n) if num is None else _checked(num, "<f8", n)
    field.code = unset(np.int32, n) if code is None else _checked(code, "<i4", n)
    words = 0
    if f"{i}.vocab" in arrays:
        data, offsets = _checked(arrays[f"{i}.vocab"], "|u1"), arrays[f"{i}.vocab_offsets"]
        _checked(offsets, "<i8")
        if offsets.size < 1 or offsets[0] != 0 or offsets[-1] != data.size:
            raise ValueError("string offsets disagree with the strings")
        if (np.diff(offsets) < 0).any():
            raise ValueError("string offsets go backwards")
        field.vocab, words = Vocab.packed(data, offsets), offsets.size - 1
    strings = field.code[field.kind == STR]
    if strings.size and not (strings.min() >= 0 and strings.max() < words):
        raise ValueError("string codes outside the dictionary")
    if f"{i}.list_slots" in arrays:
        slots = _checked(arrays[f"{i}.list_slots"], "<i8")
        codes = _checked(arrays[f"{i}.list_codes"], "<i4", slots.size)
        if slots.size and (slots.min() < 0 or slots.max() >= n or (np.diff(slots) < 0).any()):
            raise ValueError("list elements out of slot order")
        if codes.size and not (codes.min() >= 0 and codes.max() < words):
            raise ValueError("list codes outside the dictionary")
        field.list_slots, field.list_codes, field.list_used = slots, codes, slots.size
    return field
