"""The sequence user tower: causal self-attention over a user's recent items (SASRec: Kang &
McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018), chosen by
`user_encoder = "sequence"`.

Its inputs are the item tower's own vectors of the history's items (ids plus features, so an
item with no interactions of its own can appear in a history), plus a learned embedding of
each position (the last of `history` slots is the most recent item) and, with
`time_buckets`, of the gap since the previous item (log2 of minutes, bucket 0 for the first
item or an unknown time). Histories are left-padded to `history` items; each position
attends to itself and the real items before it. The output at the last position, plus an
MLP over the user's declared features where there are any, is the user's vector: one dot
product against the same item vectors the stores hold.

With `prior`, a position with no item (an empty history, or padding) outputs a learned vector
instead, plus the same feature MLP: the query of a user with no history. Training fits it to
every target item (`sequence_training`), so it is a learned popularity prior, conditioned on
the user's features and, with `recency_days`, weighted towards recent interactions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from embedrec.ranking.splits import chronological


def log_minutes(seconds: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket of each duration: 1 + floor(log2(1 + minutes)), capped at `buckets - 1`
    (negative durations count as 0); 0 where it is unknown (NaN) or `buckets` < 2."""
    seconds = np.asarray(seconds, dtype=np.float64)
    if buckets < 2:
        return np.zeros(seconds.shape, dtype=np.int64)
    ok = np.isfinite(seconds)
    minutes = np.clip(np.where(ok, seconds, 0.0), 0.0, None) / 60.0
    scaled = np.minimum(1 + np.floor(np.log2(1.0 + minutes)), buckets - 1)
    return np.where(ok, scaled, 0).astype(np.int64)


def gap_buckets(times: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket (`log_minutes`) of each item's gap to the previous one; 0 for the first item
    and wherever either time is unknown (NaN)."""
    out = np.zeros(len(times), dtype=np.int64)
    if len(times) > 1:
        out[1:] = log_minutes(np.diff(times), buckets)
    return out


def staleness_buckets(histories: Sequence[History], now: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket (`log_minutes`) of the time from each history's last item to its `now` (epoch
    seconds, NaN unknown); 0 for an empty history or an unknown time."""
    last = np.array([t[-1] if len(t) else np.nan for _, t in histories], dtype=np.float64)
    return log_minutes(np.asarray(now, dtype=np.float64) - last, buckets)


@dataclass(frozen=True)
class SequenceShape:
    """The sizes of a sequence tower (from `TwoTowerConfig`)."""

    dim: int
    hidden: int
    history: int
    layers: int
    heads: int
    dropout: float
    time_buckets: int
    normalize: bool
    prior: bool
    staleness_buckets: int = 0
    popularity: float = 0.0
    """> 0: the time-aware popularity term (`popularity.py`) on, its weights starting at this
    (the temperature: the term then scales each softmax by 1 + the item's trailing count)."""


class _Block(nn.Module):
    """Pre-norm self-attention and feed-forward, each with a residual."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last: bool = False) -> torch.Tensor:
        """`x` (B, L, dim) and `allowed` (B, 1, L, L) -> (B, L, dim). `last` (inference): the
        last position's output alone (B, 1, dim), its query over every key, with the
        projection and feed-forward for that position only: all a user vector reads of the
        last block. Dropout runs in training only (in eval its modules would return their
        input, at a few µs a call)."""
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind()  # each (B, heads, L, dim / heads)
        if last:
            q, x, allowed = q[:, :, -1:], x[:, -1:], allowed[:, :, -1:]
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self._drop(self.out(att.transpose(1, 2).reshape(b, -1, d)))
        return x + self._drop(self._ff(self.norm2(x)))

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        grow, act, drop, shrink = self.ff
        return shrink(self._drop(act(grow(x)), drop))

    def _drop(self, x: torch.Tensor, drop: nn.Module | None = None) -> torch.Tensor:
        """`x` through `drop` (default: the block's own dropout) in training; `x` in eval."""
        return (self.drop if drop is None else drop)(x) if self.training else x


class SequenceTower(nn.Module):
    """(item vectors (B, L, dim), real-item mask (B, L), gap buckets (B, L), user features)
    -> one vector per position (B, L, dim); the last position's is the user's."""

    def __init__(self, n_features: int, shape: SequenceShape) -> None:
        super().__init__()
        dim = shape.dim
        self.scale = math.sqrt(dim)
        self.positions = nn.Embedding(shape.history, dim)
        self.gaps = nn.Embedding(shape.time_buckets, dim) if shape.time_buckets > 1 else None
        for emb in (self.positions, self.gaps):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)
        self.drop = nn.Dropout(shape.dropout)
        self.blocks = nn.ModuleList(
            _Block(dim, shape.heads, shape.dropout) for _ in range(shape.layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)
        self.prior = nn.Parameter(torch.randn(dim) * 0.1) if shape.prior else None
        # per staleness bucket: a shift of the output and (the last coordinate) the logit of
        # how far it leans on the prior
        self.staleness = None
        if shape.staleness_buckets > 1:
            self.staleness = nn.Embedding(shape.staleness_buckets, dim + 1)
            nn.init.zeros_(self.staleness.weight)
            nn.init.constant_(self.staleness.weight[:, -1], -2.0)
        self.mlp = (
            nn.Sequential(
                nn.Linear(n_features, shape.hidden), nn.ReLU(), nn.Linear(shape.hidden, dim)
            )
            if n_features
            else None
        )
        self.normalize = shape.normalize
        self._triangles: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        # `popularity_days`: per staleness bucket (0: unknown, or no history), the weight of
        # the items' trailing log counts in the score (popularity.py)
        self.popularity = None
        if shape.popularity > 0:
            self.popularity = nn.Embedding(max(shape.staleness_buckets, 1), 1)
            nn.init.constant_(self.popularity.weight, shape.popularity)

    def forward(
        self,
        items: torch.Tensor,
        mask: torch.Tensor,
        gaps: torch.Tensor,
        feats: torch.Tensor | None,
        since: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x, allowed = self._inputs(items, mask, gaps)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, allowed)
        return self._output(x, mask, feats, since)

    def _inputs(
        self, items: torch.Tensor, mask: torch.Tensor, gaps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first block's input (B, L, dim) and the attention mask (B, 1, L, L): each
        position sees the real items up to itself, and itself (so a padded row is never
        empty: its output is ignored)."""
        n = items.shape[1]
        x = items * mask[..., None] * self.scale + self.positions.weight[-n:]
        if self.gaps is not None:
            x = x + self.gaps(gaps)
        causal, eye = self._triangle(n, x.device)
        return x, (causal & (mask[:, None, :] | eye))[:, None]

    def _triangle(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The causal mask (n, n) and the diagonal, made once per length and device."""
        key = (n, device)
        if key not in self._triangles:
            self._triangles[key] = (
                torch.ones(n, n, dtype=torch.bool, device=device).tril(),
                torch.eye(n, dtype=torch.bool, device=device),
            )
        return self._triangles[key]

    def _output(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        feats: torch.Tensor | None,
        since: torch.Tensor | None,
    ) -> torch.Tensor:
        """The last block's output `x` (B, L', dim) as user vectors: the head, staleness,
        the prior where `mask` (B, L') has no item, and the user's features."""
        out = self._stale(self.head(self.norm(x)), since)
        if self.prior is not None:
            out = torch.where(mask[..., None], out, self.prior)
        return self._finish(out, feats)

    def _stale(self, out: torch.Tensor, since: torch.Tensor | None) -> torch.Tensor:
        """Each position's output given the staleness bucket of its query (`since`: (B, L),
        or (B, 1) for the last position's; None or bucket 0: unknown): shifted by the
        bucket's vector and leaning on the prior by the bucket's gate, so the tower can learn
        that an old history says less than what everyone does now."""
        if self.staleness is None or since is None:
            return out
        learned = self.staleness(since)
        out = out + learned[..., :-1]
        if self.prior is None:
            return out
        return torch.lerp(out, self.prior.expand_as(out), torch.sigmoid(learned[..., -1:]))

    def last(
        self,
        items: torch.Tensor,
        mask: torch.Tensor,
        gaps: torch.Tensor,
        feats: torch.Tensor | None,
        since: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Inference only (eval mode): `forward(...)[:, -1]`, the users' vectors (B, dim),
        without computing the last block's attention and feed-forward for the positions
        before the last, whose outputs a user vector never reads (0.6-0.7x the time of
        `forward` for 16 histories of 50 items, 2 blocks; tests/embedders/
        test_sequence_last.py checks the two agree). `since`: (B, 1)."""
        assert not self.training, "SequenceTower.last is for inference; train with forward"
        x, allowed = self._inputs(items, mask, gaps)
        # the mask as -inf to add, made once for every block: a boolean one is made so by
        # each attention call, and costs it twice the time here (6 histories of 50 items)
        allowed = torch.where(allowed, 0.0, -math.inf).to(x.dtype)
        *before, final = self.blocks
        for block in before:
            x = block(x, allowed)
        return self._output(final(x, allowed, last=True), mask[:, -1:], feats, since)[:, 0]

    def popularity_weight(self, since: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """The weight of the trailing log counts for queries in staleness buckets `since`
        (None, or staleness off: bucket 0), shaped as `like`."""
        assert self.popularity is not None
        if since is None or self.staleness is None:
            since = torch.zeros(like.shape, dtype=torch.int64, device=like.device)
        return self.popularity(since.expand(like.shape))[..., 0]

    def empty(self, feats: torch.Tensor | None, n: int) -> torch.Tensor:
        """The query of `n` users with no history (B, dim): the prior plus their features
        (a tower trained with `prior`)."""
        assert self.prior is not None
        return self._finish(self.prior.expand(n, 1, -1), feats)[:, 0]

    def _finish(self, out: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor:
        if self.mlp is not None and feats is not None:
            out = out + self.mlp(feats)[:, None, :]
        return F.normalize(out, dim=-1) if self.normalize else out


History = tuple[np.ndarray, np.ndarray]
"""One user's history: item vectors (L, dim) oldest first, epoch seconds (L,), NaN unknown."""


def pad_left(rows: Sequence[np.ndarray], n: int, trailing: tuple[int, ...] = ()) -> np.ndarray:
    """The last `n` entries of each row, left-padded with zeros (of the rows' dtype) to `n`."""
    dtype = rows[0].dtype if len(rows) else np.float32
    out = np.zeros((len(rows), n, *trailing), dtype=dtype)
    for k, row in enumerate(rows):
        tail = row[-n:]
        if len(tail):
            out[k, n - len(tail) :] = tail
    return out


@torch.no_grad()
def encode_histories(
    tower: nn.Module,
    histories: Sequence[History],
    feats: torch.Tensor | None,
    shape: SequenceShape,
    device: torch.device,
    chunk: int = 1024,
    now: float | np.ndarray | None = None,
) -> np.ndarray:
    """The user vector (the last position's output) of each history, `chunk` at a time;
    `now` (epoch seconds, one or one per history; None: unknown) is when each is queried.
    With `shape.popularity` each vector ends with its popularity weight (`popularity.py`),
    and history item vectors may come as served, with their count coordinate (ignored)."""
    n, dim = shape.history, shape.dim
    out = np.zeros((len(histories), dim + (shape.popularity > 0)), dtype=np.float32)
    since = torch.from_numpy(
        staleness_buckets(
            histories, np.broadcast_to(np.nan if now is None else now, len(histories)),
            shape.staleness_buckets,
        )[:, None]
    )  # fmt: skip
    for start in range(0, len(histories), chunk):
        part = histories[start : start + chunk]
        # padded to the longest history of the chunk, not to `n`: a position before every
        # history's first item changes no real position's output (none attends to it)
        vecs, mask, gaps = _padded(part, max(1, min(n, max(len(t) for _, t in part))), shape)
        f = None if feats is None else feats[start : start + chunk]
        stale = since[start : start + chunk].to(device)
        got = tower.last(
            torch.from_numpy(vecs).to(device),
            torch.from_numpy(mask).to(device),
            torch.from_numpy(gaps).to(device),
            f,
            stale,
        )
        if shape.popularity > 0:
            got = torch.cat([got, tower.popularity_weight(stale, stale)], dim=1)
        out[start : start + len(part)] = got.cpu().numpy()
    return out


def _padded(
    part: Sequence[History], width: int, shape: SequenceShape
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The histories' last `width` item vectors (B, width, dim), real-item mask (B, width)
    and gap buckets (B, width), left-padded."""
    lengths = np.array([min(len(t), width) for _, t in part])
    mask = np.arange(width) >= width - lengths[:, None]
    popularity = shape.popularity > 0
    vecs = pad_left([_item_part(v, shape.dim, popularity) for v, _ in part], width, (shape.dim,))
    if shape.time_buckets < 2:  # no gap embedding: bucket 0 throughout
        return vecs, mask, np.zeros(mask.shape, dtype=np.int64)
    return vecs, mask, pad_left([gap_buckets(t, shape.time_buckets) for _, t in part], width)


def _item_part(vectors: np.ndarray, dim: int, popularity: bool) -> np.ndarray:
    """History item vectors (L, dim), without the served count coordinate where it is there."""
    v = np.asarray(vectors, dtype=np.float32)
    if popularity and v.size and v.shape[-1] == dim + 1:
        v = v[..., :dim]
    return v.reshape(-1, dim)


def frame_histories(
    vectors_of: Callable[[pd.DataFrame], np.ndarray],
    users: pd.DataFrame,
    history: pd.DataFrame | None,
    items: pd.DataFrame | None,
    n: int,
) -> list[History]:
    """Each user row's last `n` interactions in `history` (ordered by `chronological`) as
    item vectors from `vectors_of` (the item tower) over their rows of `items` (id and
    features; without `items`, ids only). Items `items` lacks are left out."""
    empty: History = (np.zeros((0, 0), np.float32), np.zeros(0))
    if history is None or not len(history):
        return [empty] * len(users)
    user_col = "user_id" if "user_id" in users.columns else "id"
    wanted = users[user_col].astype(str)
    h = history.assign(
        user_id=history["user_id"].astype(str), item_id=history["item_id"].astype(str)
    )
    h = chronological(h[h["user_id"].isin(set(wanted))]).groupby("user_id", sort=False).tail(n)
    ids = list(dict.fromkeys(h["item_id"]))
    if items is None:
        rows = pd.DataFrame({"item_id": ids})
    else:
        id_col = "item_id" if "item_id" in items.columns else "id"
        rows = items.assign(item_id=items[id_col].astype(str)).drop_duplicates("item_id")
        rows = rows[rows["item_id"].isin(set(ids))]
    table = dict(zip(rows["item_id"], vectors_of(rows.reset_index(drop=True)), strict=True))
    h = h[h["item_id"].isin(table.keys())]
    times = h["timestamp"].to_numpy(np.float64) if "timestamp" in h.columns else None
    found: dict[str, History] = {}
    for user, at in h.groupby("user_id", sort=False).indices.items():
        vecs = np.stack([table[i] for i in h["item_id"].to_numpy()[at]])
        found[user] = (vecs, times[at] if times is not None else np.full(len(at), np.nan))
    return [found.get(u, empty) for u in wanted]


def last_time(interactions: pd.DataFrame) -> float | None:
    """The latest timestamp of `interactions` (epoch seconds): the "now" a model trained on
    them is queried at in evaluation; None without timestamps."""
    if "timestamp" not in interactions.columns or not len(interactions):
        return None
    latest = interactions["timestamp"].max()
    return float(latest) if pd.notna(latest) else None
