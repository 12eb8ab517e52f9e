"""One vector space as the service holds it: an immutable `Space` bundle of the space's
stores, what makes its query vectors, and which alias generation they came from.

A reload builds a whole new `Space` beside the serving one and the `Recommender` swaps it in
with one attribute assignment, so a request, which reads its space once and uses that bundle
to the end, never sees a store of one generation with the model of another, and the hot path
takes no lock. The bundle carries a weak-reference slot so that whoever retires the old one
can see when the last request using it has let go (see `embedrec.retrieval.reload`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from embedrec.common.config import named_by
from embedrec.embedders import Embedder
from embedrec.embedders.two_tower import TwoTowerItemEmbedder, TwoTowerModel
from embedrec.ingestion.store_info import embedder_for, store_info
from embedrec.retrieval.config import SpaceConfig, TwoTowerSpaceConfig
from embedrec.retrieval.failover import Failover
from embedrec.stores import open_existing
from embedrec.stores.errors import ConfigError
from embedrec.stores.lifecycle.aliases import AliasBook, alias_book

TokenFn = Callable[[str], str | None]
"""A store URI -> its alias's live token (None for a plain store): what a reload compares."""
Tokens = tuple[str | None, str | None]
"""The live tokens of a space's primary and replica when it was opened."""


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Space:
    """A vector space's stores and query side, from one generation of each store."""

    name: str
    failover: Failover
    embedder: Embedder | None = None
    """The text or image embedder, or the two-tower item embedder whose model this is:
    its `name` is the fingerprint a new generation's store info is compared with."""
    model: TwoTowerModel | None = None
    user_vectors: Mapping[str, np.ndarray] = field(default_factory=dict)
    """The known users' vectors under `model`, computed when the space is built."""
    tokens: Tokens = (None, None)

    @property
    def dim(self) -> int:
        return self.failover.dim

    @property
    def generation(self) -> str | None:
        """The primary alias's live token when this space was opened; None for a plain store."""
        return self.tokens[0]

    def describe(self) -> dict[str, Any]:
        fo = self.failover
        out: dict[str, Any] = {
            "primary": fo.primary.uri,
            "replica": fo.replica.uri if fo.replica else None,
        }
        if any(t is not None for t in self.tokens):
            out["generation"] = self.generation
        return out


def make_space(
    name: str,
    failover: Failover,
    *,
    embedder: Embedder | None = None,
    model: TwoTowerModel | None = None,
    users: pd.DataFrame | None = None,
    tokens: Tokens = (None, None),
) -> Space:
    """A `Space` whose parts fit together: the query side the space needs, of its store's
    dimension, and (two-tower, with `users`) every known user's vector."""
    if name == "two-tower":
        if model is None:
            raise ConfigError("the two-tower space needs a two-tower model")
        if model.config.vector_dim != failover.dim:
            raise ConfigError(
                f"the two-tower model gives {model.config.vector_dim}-d vectors but "
                f"{failover.primary.uri} holds {failover.dim}-d ones"
            )
        needed = model.config.metric
        if needed is not None and failover.primary.metric != needed:
            raise ConfigError(
                f"the two-tower model's vectors end with a popularity coordinate "
                f"(popularity_days), which {failover.primary.metric} would rescale: "
                f"{failover.primary.uri} must use metric={needed}"
            )
    elif embedder is None:
        raise ConfigError(f"the {name} space needs a {name} embedder")
    elif embedder.dim != failover.dim:
        raise ConfigError(
            f"{embedder.name} gives {embedder.dim}-d vectors but the {name} store "
            f"{failover.primary.uri} holds {failover.dim}-d ones"
        )
    vectors: dict[str, np.ndarray] = {}
    # a sequence encoder's users get their vectors at request time, from their histories
    if model is not None and not model.config.sequence and users is not None and len(users):
        vectors = dict(zip(users["user_id"].tolist(), model.user_vectors(users), strict=True))
    return Space(name, failover, embedder, model, vectors, tokens)


def open_space(
    name: str,
    cfg: SpaceConfig,
    opened: ExitStack,
    *,
    users: pd.DataFrame | None = None,
    token: TokenFn,
    reuse: Space | None = None,
) -> Space:
    """The space `cfg` describes, its stores entered on `opened` (which the caller closes if
    anything fails). The tokens are read before the stores are opened, so that a swap in
    between shows as a changed token at the next check rather than going unseen. `reuse`: the
    space serving now, whose embedder or model is kept where the new store names the same one
    (by fingerprint), rather than loaded again."""
    tokens = (token(cfg.uri), token(cfg.replica) if cfg.replica else None)
    fo = _failover(name, cfg, opened)
    known = store_info(fo.primary)
    same = (
        reuse is not None
        and reuse.embedder is not None
        and known is not None
        and known.embedder_name == reuse.embedder.name
    )
    if same:
        assert reuse is not None
        embedder = reuse.embedder
        vectors = reuse.user_vectors
        return Space(name, fo, embedder, reuse.model, vectors, tokens)
    if isinstance(cfg, TwoTowerSpaceConfig):
        item = _two_tower_for(fo, cfg)
        return make_space(name, fo, embedder=item, model=item.model, users=users, tokens=tokens)
    default = "text" if name == "text" else "image"
    spec = getattr(cfg, "embedder", None)  # checked against the store's own record
    embedder = embedder_for(fo.primary, spec, default=default)
    return make_space(name, fo, embedder=embedder, tokens=tokens)


def _two_tower_for(fo: Failover, cfg: TwoTowerSpaceConfig) -> TwoTowerItemEmbedder:
    """The model `cfg` names, checked by fingerprint against the one the store says built
    it (`EmbedderMismatch` names both); without one, the store's own."""
    known = store_info(fo.primary)
    if cfg.model is None and known is None:
        raise ConfigError(
            f"[two_tower] model: {fo.primary.uri} does not say which model built it "
            "(it was not written by embedrec ingest); give the model file"
        )
    if cfg.model is not None and not cfg.model.is_file():
        raise ConfigError(f"{cfg.model}: no such model file{named_by(cfg.model)}")
    spec = f"two-tower:{cfg.model}" if cfg.model is not None else None
    embedder = embedder_for(fo.primary, spec)
    if not isinstance(embedder, TwoTowerItemEmbedder):
        raise ConfigError(
            f"{fo.primary.uri} was built by {embedder.name}, not a two-tower model: it "
            "cannot serve the two-tower space"
        )
    return embedder


def _failover(name: str, cfg: SpaceConfig, opened: ExitStack) -> Failover:
    """The space's stores, which must exist; the Failover's pools start no thread before its
    first call, so closing the stores is all a failed start has to undo."""
    primary = opened.enter_context(open_existing(cfg.uri))
    replica = opened.enter_context(open_existing(cfg.replica)) if cfg.replica else None
    return Failover(name, primary, replica, timeout_s=cfg.timeout_s, cooldown_s=cfg.cooldown_s)


class LiveTokens:
    """`TokenFn` over the store aliases: each URI's live token (its live generation's name)
    read through one `AliasBook` per URI, kept, since the books of network stores hold a
    client open. A scheme without aliases (qdrant+memory) has no token, as a plain store."""

    def __init__(self) -> None:
        self._books: dict[str, AliasBook | None] = {}

    def __call__(self, uri: str) -> str | None:
        if uri not in self._books:
            try:
                self._books[uri] = alias_book(uri)
            except ConfigError:
                self._books[uri] = None
        book = self._books[uri]
        return book.live_token() if book is not None else None
