"""Aliases and generations: a store name that points at one physical store (its live
generation), swapped atomically to a new one that a rebuild wrote beside it.

`alias_book(uri)` gives the alias's book (`AliasBook`, in generations.py) by scheme:

- `faiss:PATH`, `qdrant+edge:PATH`: a pointer file in PATH, generations in PATH/gNNNN
  (pointer.py);
- `qdrant://host/NAME`, `qdrant+local:PATH/NAME`: Qdrant's own collection aliases, swapped
  by one `update_collection_aliases` call; generations are collections `NAME__gNNNN`
  (qdrant/aliases.py);
- `pinecone://INDEX?namespace=NS`: a pointer record in embedrec's reserved namespace;
  generations are namespaces `NS__gNNNN` (pinecone/aliases.py).

`qdrant+memory:` has none: each open of it is a new, empty in-memory Qdrant, so nothing could
point across opens. `open_store` and `open_existing` open an alias's live generation, so every
command works on an alias as on a plain store; a store opened so stays on that generation.
"""

from __future__ import annotations

import importlib

from embedrec.stores.errors import ConfigError
from embedrec.stores.lifecycle.generations import AliasBook, AliasState, Generation, reached
from embedrec.stores.uri import parse_uri

BOOKS: dict[str, tuple[str, str]] = {
    "faiss": ("embedrec.stores.lifecycle.pointer", "PathBook"),
    "qdrant+edge": ("embedrec.stores.lifecycle.pointer", "PathBook"),
    "qdrant": ("embedrec.stores.qdrant.aliases", "QdrantBook"),
    "qdrant+local": ("embedrec.stores.qdrant.aliases", "QdrantBook"),
    "pinecone": ("embedrec.stores.pinecone.aliases", "PineconeBook"),
}


def alias_book(uri: str) -> AliasBook:
    """The book of the alias `uri` names (it need not exist yet: the first `swap` makes it)."""
    parsed = parse_uri(uri)
    if parsed.scheme == "qdrant+memory":
        raise ConfigError(
            f"{parsed.raw}: qdrant+memory has no aliases (each open is a new, empty Qdrant); "
            "use qdrant+local:PATH/NAME or a server"
        )
    if parsed.scheme not in BOOKS:
        raise ConfigError(f"{parsed.raw}: no aliases for scheme {parsed.scheme!r}")
    module_name, class_name = BOOKS[parsed.scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{parsed.scheme} aliases need {exc.name}") from exc
    return getattr(module, class_name)(uri)


__all__ = ["AliasBook", "AliasState", "Generation", "alias_book", "reached"]
