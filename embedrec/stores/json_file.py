"""Reading the small JSON files stores keep beside their data (a FAISS manifest, an alias
pointer, qdrant-client's local `meta.json`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from embedrec.stores.errors import CorruptStore

ABSENT = object()
"""What `read_json` returns for a file that is not there (a file holding `null` is None)."""


def read_json(where: Path) -> Any:
    """The parsed file, `ABSENT` when there is none; `CorruptStore` naming it when it cannot
    be read or parsed (its shape is the caller's to check)."""
    try:
        return json.loads(where.read_bytes())
    except FileNotFoundError:
        return ABSENT
    except (OSError, ValueError) as exc:
        raise CorruptStore(f"{where} is unreadable: {exc}") from None
