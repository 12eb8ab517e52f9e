"""The store info (which embedder built a store, its search defaults), for every store:
`StoreConformance` inherits these tests."""

from __future__ import annotations

import numpy as np
import pytest

from embedrec import DimensionError
from embedrec.stores import ConfigError, StoreInfo


def info_for(dim: int = 8, metric: str = "cosine", **changes) -> StoreInfo:
    fields = {
        "embedder": "text:all-MiniLM-L6-v2",
        "embedder_name": "sentence-transformers/all-MiniLM-L6-v2@c9745ed",
        "dim": dim,
        "modality": "text",
        "metric": metric,
        "search_defaults": {"ef": 96, "exact": False, "recall": 0.95},
    }
    return StoreInfo(**(fields | changes))


class StoreInfoConformance:
    def test_info_round_trip(self, make):
        store = make(dim=8, metric="cosine")
        assert store.info is None
        store.set_info(info_for())
        assert store.info == info_for()
        assert dict(store.info.search_defaults) == {"ef": 96, "exact": False, "recall": 0.95}
        store.set_info(info_for(embedder="text", search_defaults={}))
        assert store.info == info_for(embedder="text", search_defaults={})

    def test_info_survives_reopening_and_stays_out_of_the_data(self, make):
        store = make(dim=8, metric="dot")
        vectors = np.eye(8, dtype=np.float32)
        store.upsert([f"r{i}" for i in range(8)], vectors)
        store.set_info(info_for(metric="dot"))
        store.flush()
        reopened = self.reopen(store)
        try:
            assert reopened.info == info_for(metric="dot")
            assert reopened.count() == 8
            hits = reopened.search(vectors[:1], 20)[0]
            assert sorted(hits.ids) == sorted(f"r{i}" for i in range(8))
            assert reopened.delete(filter={}) == 8
            reopened.flush()
            assert reopened.count() == 0 and reopened.info == info_for(metric="dot")
        finally:
            reopened.close()

    def test_info_of_an_empty_store_is_kept(self, make):
        store = make(dim=8, metric="l2")
        store.set_info(info_for(metric="l2"))
        reopened = self.reopen(store)
        try:
            assert reopened.info == info_for(metric="l2") and reopened.count() == 0
        finally:
            reopened.close()

    def test_info_that_contradicts_the_store_is_refused(self, make):
        store = make(dim=8, metric="cosine")
        with pytest.raises(DimensionError, match="9-d"):
            store.set_info(info_for(dim=9))
        with pytest.raises(ConfigError, match="metric l2"):
            store.set_info(info_for(metric="l2"))
        with pytest.raises(ConfigError, match="StoreInfo"):
            store.set_info({"embedder": "text"})  # type: ignore[arg-type]
        assert store.info is None
