"""FAISS, the embedded default store: `faiss:PATH?index=HNSW32&metric=cosine`.

The package, one concern a module:

- `kinds`: the index kinds (Flat, HNSW, IVF, IVF-PQ, SQ8), their parsing and FAISS objects;
- `table`: ids and metadata by slot beside the index, tombstones, and caches derived from them;
- `planner`: how one search runs (exact scoring or the ANN index, through a mask of slots);
- `hits`: FAISS's answer as lazy `Hits`;
- `persistence`: generations on disk under a manifest, saved atomically, read consistently;
- `store`: `FaissStore`, and the read/write lock that guards its index and table.

Kinds that need training (IVF, PQ, SQ8) hold upserts in an exact flat index until `flush()`
has at least `min_train` vectors to train on; until then search is exact over that flat index.
Dead slots are reclaimed by `compact()`, which `flush()` runs by itself for the flat-code kinds
(Flat, SQ8, cheap) and for any kind once more than COMPACT_DEAD_FRACTION of the slots are
dead (a measured figure: benchmarks/churn.py, docs/churn.md).
"""

from embedrec.stores.faiss.kinds import IndexSpec
from embedrec.stores.faiss.store import FaissStore

__all__ = ["FaissStore", "IndexSpec"]
