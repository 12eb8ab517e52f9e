"""Learned two-tower user/item vectors (torch), trained on interactions.

User tower: id embedding + MLP(age bucket, gender, occupation). Item tower: id embedding +
MLP(genres multi-hot, release decade, title text embedding). Trained with in-batch sampled
softmax over temperature-scaled cosine scores, with the log-q correction (Yi et al.,
"Sampling-bias-corrected neural modeling", RecSys 2019): each in-batch logit is lowered by
log of the item's sampling probability, here its share of training interactions. Ids are
dropped at random during training so that the feature path alone gives usable vectors to
new users and items (id index 0 is "unknown"). With `features=False, loss="bpr"` the same
trainer fits plain BPR matrix factorisation (Rendle et al., UAI 2009).

Files: `save(path)` writes the state dict to `path` and the config + vocabularies to
`path.with_suffix(".json")`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

from embedrec.embedders.base import resolve_device

log = logging.getLogger(__name__)

AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups
TextFn = Callable[[list[str]], np.ndarray]


class TwoTowerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(64, ge=1)
    hidden: int = Field(128, ge=1)
    features: bool = True
    text: bool = True
    """Use the title's text embedding as an item feature (needs `features`)."""
    text_components: int = Field(32, ge=0)
    """Project title embeddings onto their top principal components (0: keep all)."""
    loss: Literal["softmax", "bpr"] = "softmax"
    normalize: bool = True
    temperature: float = Field(0.2, gt=0)
    logq: bool = True
    id_dropout: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(1024, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    """BPR only: weight of the squared norms of the batch's embeddings."""
    patience: int = Field(3, ge=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of each user's training ratings held out for early stopping; 0 disables it."""
    refit: bool = True
    """After early stopping, retrain on all training data for the best number of epochs."""
    seed: int = 42
    threads: int = Field(1, ge=1)
    """Torch CPU threads while training; 1 avoids spin-waiting on a shared, busy machine."""
    device: str = "auto"


@contextlib.contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seed torch, force deterministic kernels and a fixed thread count; restore after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    # deterministic cuBLAS needs a fixed workspace, set before CUDA's first matmul
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _index(values: Sequence[str], vocab: dict[str, int]) -> np.ndarray:
    return np.array([vocab.get(str(v), 0) for v in values], dtype=np.int64)


def _vocab(values: Any) -> dict[str, int]:
    return {v: i + 1 for i, v in enumerate(sorted({str(x) for x in values}))}


def _require(frame: pd.DataFrame, what: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} rows lack field(s) {missing}; they have {list(frame.columns)}")


def _frame(rows: pd.DataFrame | Sequence[dict[str, Any]]) -> pd.DataFrame:
    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


class Vocab(BaseModel):
    users: dict[str, int]
    items: dict[str, int]
    genders: dict[str, int]
    occupations: dict[str, int]
    genres: dict[str, int]
    decades: dict[str, int]
    text_dim: int = 0


class _Tower(nn.Module):
    def __init__(self, n_ids: int, n_features: int, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.ids = nn.Embedding(n_ids + 1, cfg.dim)
        nn.init.normal_(self.ids.weight, std=0.1 if cfg.loss == "softmax" else 0.01)
        self.mlp = (
            nn.Sequential(
                nn.Linear(n_features, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.dim)
            )
            if cfg.features
            else None
        )
        self.normalize = cfg.normalize

    def forward(self, ids: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor:
        out = self.ids(ids)
        if self.mlp is not None and feats is not None:
            out = out + self.mlp(feats)
        return nn.functional.normalize(out, dim=-1) if self.normalize else out


class TwoTowerModel:
    """Fit with `fit`, or `load` a saved one; then `user_vectors` / `item_vectors`."""

    def __init__(self, config: TwoTowerConfig, vocab: Vocab, text_fn: TextFn | None = None):
        self.config = config
        self.vocab = vocab
        self._text_fn = text_fn
        self.device = torch.device(resolve_device(config.device))
        n_user_feats = len(AGE_EDGES) + 1 + len(vocab.genders) + 1 + len(vocab.occupations) + 1
        text_width = min(config.text_components or vocab.text_dim, vocab.text_dim)
        n_item_feats = len(vocab.genres) + len(vocab.decades) + 1 + text_width
        # title embeddings are centred and projected (PCA fitted on the training items)
        self.text_mean = torch.zeros(vocab.text_dim)
        self.text_proj = torch.eye(vocab.text_dim)[:, :text_width]
        self.user_tower = _Tower(len(vocab.users), n_user_feats, config).to(self.device)
        self.item_tower = _Tower(len(vocab.items), n_item_feats, config).to(self.device)
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------- features

    def _text(self, titles: list[str]) -> np.ndarray:
        if self._text_fn is None:
            self._text_fn = default_text_fn()
        out = np.asarray(self._text_fn(titles), dtype=np.float32)
        if out.shape != (len(titles), self.vocab.text_dim):
            raise ValueError(
                f"text embedder returned shape {out.shape}, "
                f"expected ({len(titles)}, {self.vocab.text_dim})"
            )
        return out

    def user_features(self, users: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        _require(users, "user", ["user_id"])
        ids = torch.from_numpy(_index(users["user_id"].tolist(), self.vocab.users))
        if not self.config.features:
            return ids.to(self.device), None
        _require(users, "user", ["age", "gender", "occupation"])
        v = self.vocab
        age = np.searchsorted(AGE_EDGES, users["age"].to_numpy(np.float64), side="right")
        blocks = [
            np.eye(len(AGE_EDGES) + 1, dtype=np.float32)[age],
            np.eye(len(v.genders) + 1, dtype=np.float32)[_index(users["gender"], v.genders)],
            np.eye(len(v.occupations) + 1, dtype=np.float32)[
                _index(users["occupation"], v.occupations)
            ],
        ]
        feats = torch.from_numpy(np.concatenate(blocks, axis=1))
        return ids.to(self.device), feats.to(self.device)

    def item_features(
        self, items: pd.DataFrame, text: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _require(items, "item", ["item_id"])
        ids = torch.from_numpy(_index(items["item_id"].tolist(), self.vocab.items))
        if not self.config.features:
            return ids.to(self.device), None
        _require(items, "item", ["genres", "year"] + (["title"] if self.vocab.text_dim else []))
        v = self.vocab
        genres = np.zeros((len(items), len(v.genres)), dtype=np.float32)
        for row, names in enumerate(items["genres"]):
            if isinstance(names, str) or not hasattr(names, "__iter__"):
                raise ValueError(
                    f"item {items['item_id'].iloc[row]!r}: genres must be a list of str, "
                    f"got {names!r}"
                )
            for g in names:
                if g in v.genres:
                    genres[row, v.genres[g] - 1] = 1.0
        decades = [_decade(y) for y in items["year"]]
        blocks = [genres, np.eye(len(v.decades) + 1, dtype=np.float32)[_index(decades, v.decades)]]
        if v.text_dim:
            raw = text if text is not None else self._text(items["title"].tolist())
            mean, proj = self.text_mean.numpy(), self.text_proj.numpy()
            blocks.append((np.asarray(raw, np.float32) - mean) @ proj)
        feats = torch.from_numpy(np.concatenate(blocks, axis=1).astype(np.float32))
        return ids.to(self.device), feats.to(self.device)

    # ---------------------------------------------------------------- vectors

    @torch.no_grad()
    def user_vectors(self, users: pd.DataFrame | Sequence[dict[str, Any]]) -> np.ndarray:
        """Vectors for user rows (user_id, age, gender, occupation); an unknown user_id gets
        its vector from the features alone."""
        ids, feats = self.user_features(_frame(users))
        self.user_tower.eval()
        return self.user_tower(ids, feats).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def item_vectors(
        self, items: pd.DataFrame | Sequence[dict[str, Any]], *, text: np.ndarray | None = None
    ) -> np.ndarray:
        """Vectors for item rows (item_id, title, year, genres); an unknown item_id gets its
        vector from the features alone. `text` may pass precomputed title embeddings."""
        ids, feats = self.item_features(_frame(items), text)
        self.item_tower.eval()
        return self.item_tower(ids, feats).cpu().numpy().astype(np.float32)

    # ---------------------------------------------------------------- training

    @classmethod
    def fit(
        cls,
        ratings: pd.DataFrame,
        users: pd.DataFrame,
        items: pd.DataFrame,
        config: TwoTowerConfig | None = None,
        *,
        text_fn: TextFn | None = None,
        progress: bool = True,
    ) -> TwoTowerModel:
        """Train on (user_id, item_id) interactions; every rating counts as a positive.
        Only ids seen in `ratings` get an id embedding; the rest are feature-only."""
        from embedrec.eval.splits import stratified_split

        config = config or TwoTowerConfig()
        _require(ratings, "rating", ["user_id", "item_id"])
        text_dim = 0
        item_text = None
        if config.features and config.text:
            text_fn = text_fn or default_text_fn()
            item_text = np.asarray(text_fn(items["title"].tolist()), dtype=np.float32)
            text_dim = item_text.shape[1]
        vocab = Vocab(
            users=_vocab(ratings["user_id"]),
            items=_vocab(ratings["item_id"]),
            genders=_vocab(users["gender"]) if config.features else {},
            occupations=_vocab(users["occupation"]) if config.features else {},
            genres=_vocab(g for gs in items["genres"] for g in gs) if config.features else {},
            decades=_vocab(_decade(y) for y in items["year"]) if config.features else {},
            text_dim=text_dim,
        )
        started = time.perf_counter()
        with deterministic(config.seed, config.threads):
            model = cls(config, vocab, text_fn)
            text_state = model._fit_text(item_text)
            data = _TrainData(model, ratings, users, items, item_text)
            epochs = config.epochs
            if config.val_fraction > 0:
                fit_part, val_part = stratified_split(
                    ratings, 1 - config.val_fraction, filter_by="user", seed=config.seed
                )
                best = model._train(data, fit_part, val_part, epochs, progress)
                if config.refit:
                    torch.manual_seed(config.seed)
                    model = cls(config, vocab, text_fn)
                    model._load_text(text_state)
                    model._train(data, ratings, None, best, progress)
            else:
                model._train(data, ratings, None, epochs, progress)
        log.info("two-tower trained in %.1f s", time.perf_counter() - started)
        return model

    def _train(
        self,
        data: _TrainData,
        ratings: pd.DataFrame,
        val: pd.DataFrame | None,
        epochs: int,
        progress: bool,
    ) -> int:
        """Train for up to `epochs`; with `val`, stop early on validation NDCG@10, keep the
        best weights and return the best epoch count."""
        cfg = self.config
        u = torch.from_numpy(_index(ratings["user_id"].tolist(), self.vocab.users))
        i = torch.from_numpy(_index(ratings["item_id"].tolist(), self.vocab.items))
        counts = torch.bincount(i, minlength=len(self.vocab.items) + 1).double()
        log_q = torch.log(counts.clamp(min=1) / counts.sum()).float().to(self.device)
        params = [*self.user_tower.parameters(), *self.item_tower.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        best, best_epoch, best_state, bad = -math.inf, epochs, None, 0
        bar = tqdm(range(epochs), desc="two-tower" if cfg.features else "bpr", disable=not progress)
        for epoch in bar:
            self.user_tower.train()
            self.item_tower.train()
            total = 0.0
            order = torch.randperm(len(u), generator=gen)
            for start in range(0, len(u), cfg.batch_size):
                batch = order[start : start + cfg.batch_size]
                loss = self._loss(data, u[batch], i[batch], log_q, gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            stats = {"epoch": epoch + 1, "loss": total / len(u)}
            if val is not None:
                stats["val_ndcg@10"] = self._validate(data, ratings, val)
                if stats["val_ndcg@10"] > best:
                    best, best_epoch, bad = stats["val_ndcg@10"], epoch + 1, 0
                    best_state = self._state()
                else:
                    bad += 1
            self.history.append(stats)
            bar.set_postfix({k: round(v, 4) for k, v in stats.items() if k != "epoch"})
            if val is not None and bad >= cfg.patience:
                break
        if best_state is not None:
            self._load_state(best_state)
        return best_epoch

    def _loss(
        self,
        data: _TrainData,
        u: torch.Tensor,
        i: torch.Tensor,
        log_q: torch.Tensor,
        gen: torch.Generator,
    ) -> torch.Tensor:
        cfg = self.config
        u_ids, i_ids = u.clone(), i.clone()
        if cfg.id_dropout > 0:
            u_ids[torch.rand(len(u), generator=gen) < cfg.id_dropout] = 0
            i_ids[torch.rand(len(i), generator=gen) < cfg.id_dropout] = 0
        dev = self.device
        uv = self.user_tower(u_ids.to(dev), data.user_feats(u))
        iv = self.item_tower(i_ids.to(dev), data.item_feats(i))
        if cfg.loss == "bpr":
            j = torch.randint(1, len(self.vocab.items) + 1, (len(i),), generator=gen)
            jv = self.item_tower(j.to(dev), data.item_feats(j))
            diff = (uv * iv).sum(-1) - (uv * jv).sum(-1)
            reg = (uv.pow(2).sum() + iv.pow(2).sum() + jv.pow(2).sum()) / len(u)
            return -nn.functional.logsigmoid(diff).mean() + cfg.l2 * reg
        i = i.to(dev)
        logits = uv @ iv.T / cfg.temperature
        if cfg.logq:
            logits = logits - log_q[i][None, :]
        # the same item elsewhere in the batch is a positive, not a negative
        same = (i[None, :] == i[:, None]) & ~torch.eye(len(i), dtype=torch.bool, device=dev)
        logits = logits.masked_fill(same, -torch.inf)
        return nn.functional.cross_entropy(logits, torch.arange(len(i), device=dev))

    @torch.no_grad()
    def _validate(self, data: _TrainData, seen: pd.DataFrame, val: pd.DataFrame) -> float:
        from embedrec.eval.metrics import hit_matrix, ndcg_at_k

        self.user_tower.eval()
        self.item_tower.eval()
        uv = self.user_tower(data.all_user_ids, data.all_user_feats)
        iv = self.item_tower(data.all_item_ids, data.all_item_feats)
        scores = uv @ iv.T
        su = _index(seen["user_id"].tolist(), self.vocab.users)
        si = _index(seen["item_id"].tolist(), self.vocab.items)
        scores[torch.from_numpy(su - 1), torch.from_numpy(si - 1)] = -torch.inf
        top = torch.topk(scores, 10, dim=1).indices.cpu().numpy()
        vu = _index(val["user_id"].tolist(), self.vocab.users) - 1
        vi = _index(val["item_id"].tolist(), self.vocab.items) - 1
        keep = vi >= 0
        users = np.unique(vu[keep])
        remap = np.full(len(self.vocab.users), -1)
        remap[users] = np.arange(len(users))
        hits = hit_matrix(top[users], remap[vu[keep]], vi[keep], len(self.vocab.items))
        n_rel = np.bincount(remap[vu[keep]], minlength=len(users))
        return ndcg_at_k(hits, n_rel, 10)

    def _fit_text(self, item_text: np.ndarray | None) -> dict[str, torch.Tensor]:
        if item_text is not None and self.text_proj.shape[1] < self.vocab.text_dim:
            mean = item_text.mean(axis=0)
            _, _, vt = np.linalg.svd(item_text - mean, full_matrices=False)
            self.text_mean = torch.from_numpy(mean.astype(np.float32))
            self.text_proj = torch.from_numpy(vt[: self.text_proj.shape[1]].T.copy())
        return self._text_state()

    def _text_state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.text_mean.clone(), "proj": self.text_proj.clone()}

    def _load_text(self, state: dict[str, torch.Tensor]) -> None:
        self.text_mean, self.text_proj = state["mean"].float(), state["proj"].float()

    def _state(self) -> dict[str, dict[str, torch.Tensor]]:
        return copy.deepcopy(
            {
                "user": self.user_tower.state_dict(),
                "item": self.item_tower.state_dict(),
                "text": self._text_state(),
            }
        )

    def _load_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.user_tower.load_state_dict(state["user"])
        self.item_tower.load_state_dict(state["item"])
        self._load_text(state["text"])

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self._state(), path)
        meta = {
            "config": self.config.model_dump(),
            "vocab": self.vocab.model_dump(),
            "history": self.history,
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(
        cls, path: str | Path, *, text_fn: TextFn | None = None, device: str | None = None
    ) -> TwoTowerModel:
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"two-tower model needs {path} and {meta_path}")
        meta = json.loads(meta_path.read_text())
        config = TwoTowerConfig.model_validate(meta["config"])
        if device is not None:
            config = config.model_copy(update={"device": device})
        model = cls(config, Vocab.model_validate(meta["vocab"]), text_fn)
        state = torch.load(path, map_location=model.device, weights_only=True)
        model._load_state(state)
        model.history = meta.get("history", [])
        return model


def _decade(year: Any) -> str:
    if year is None or pd.isna(year):
        return ""
    return f"{int(year) // 10 * 10}s"


class _TrainData:
    """Feature tensors for every known user and item, indexed by vocabulary index."""

    def __init__(
        self,
        model: TwoTowerModel,
        ratings: pd.DataFrame,
        users: pd.DataFrame,
        items: pd.DataFrame,
        item_text: np.ndarray | None,
    ) -> None:
        v = model.vocab
        user_ids = sorted(v.users, key=v.users.__getitem__)
        item_ids = sorted(v.items, key=v.items.__getitem__)
        users = users.assign(user_id=users["user_id"].astype(str)).drop_duplicates("user_id")
        items = items.reset_index(drop=True).assign(item_id=items["item_id"].astype(str))
        missing_u = set(user_ids) - set(users["user_id"])
        missing_i = set(item_ids) - set(items["item_id"])
        if missing_u or missing_i:
            what = (
                f"user {sorted(missing_u)[0]!r}" if missing_u else f"item {sorted(missing_i)[0]!r}"
            )
            raise ValueError(f"ratings mention {what}, which the users/items table lacks")
        urows = users.set_index("user_id").loc[user_ids].reset_index()
        pos = pd.Series(np.arange(len(items)), index=items["item_id"]).loc[item_ids].to_numpy()
        irows = items.iloc[pos]
        text = item_text[pos] if item_text is not None else None
        self.all_user_ids, self.all_user_feats = model.user_features(urows)
        self.all_item_ids, self.all_item_feats = model.item_features(irows, text)

    def user_feats(self, idx: torch.Tensor) -> torch.Tensor | None:
        f = self.all_user_feats
        return None if f is None else f[idx.to(f.device) - 1]

    def item_feats(self, idx: torch.Tensor) -> torch.Tensor | None:
        f = self.all_item_feats
        return None if f is None else f[idx.to(f.device) - 1]


def default_text_fn() -> TextFn:
    """all-MiniLM-L6-v2 title embeddings through the on-disk embedding cache."""
    from embedrec.embedders.cache import EmbeddingCache, embed_cached
    from embedrec.embedders.text import TextEmbedder

    embedder = TextEmbedder()
    cache = EmbeddingCache()
    return lambda texts: embed_cached(embedder, texts, cache)[0]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TwoTowerItemEmbedder:
    """Item vectors of a saved two-tower model, as an embedder for the ingestion pipeline."""

    modality = "item"

    def __init__(
        self, path: str | Path, *, text_fn: TextFn | None = None, device: str | None = None
    ) -> None:
        self.path = Path(path)
        self.model = TwoTowerModel.load(self.path, text_fn=text_fn, device=device)
        self.name = f"two-tower:{self.path.name}@sha256:{file_sha256(self.path)}"
        self.dim = self.model.config.dim

    def embed(self, batch: pd.DataFrame | Sequence[dict[str, Any]]) -> np.ndarray:
        """Item rows (item_id, title, year, genres); the ingestion pipeline's records name
        the id `id`, which stands in for a missing `item_id`."""
        frame = _frame(batch)
        if "item_id" not in frame.columns and "id" in frame.columns:
            frame = frame.rename(columns={"id": "item_id"})
        return self.model.item_vectors(frame)


def load_item_embedder(path: str | Path) -> TwoTowerItemEmbedder:
    return TwoTowerItemEmbedder(path)


def from_spec(arg: str | None, **kw: Any) -> TwoTowerItemEmbedder:
    """`get_embedder("two-tower:PATH")`: the item tower of the model saved at PATH."""
    if not arg:
        raise ValueError("the two-tower embedder needs a model file: two-tower:PATH")
    return TwoTowerItemEmbedder(arg, **kw)
