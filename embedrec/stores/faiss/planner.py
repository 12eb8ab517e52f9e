"""How one search runs over a FAISS index: unfiltered, or through a mask of allowed slots
(a filter, tombstones, excluded ids), choosing between exact scoring and the ANN index.

Filters become a bitmap that FAISS applies during the search, never a post-filter of a short
list. The choice, per call:

- few slots allowed: score them all exactly, from the allowed vectors gathered into one
  matrix (kept for the selection until the next write) and scored in one product (BLAS for
  a batch, a contiguous SIMD scan for one query), which FAISS's selector scan of a flat index
  (one query and one slot at a time, through the whole index) cannot match. Single queries
  plan as batches do, so that a filter correlated with the query's neighbourhood, which an
  ANN search with a selector answers poorly, gets the batch's exact answer.
- more allowed: the ANN index with a selector, its effort raised so that its candidate list
  still holds about k allowed slots, and asked for more than k hits (`probe_k`). A row that
  gets fewer than that found few allowed slots near the query: the filter is correlated
  against it, the ANN answer may miss better matches, and that row is answered exactly. So k
  hits come back whenever k slots are allowed, and anti-correlated filters keep their recall.

Exact costs about `allowed` vector scores per query; the ANN search about `ann_work` (its
raised effort times the vectors each step scores).
"""

from __future__ import annotations

import copy
import math
import threading

import faiss
import numpy as np

from embedrec.stores.faiss.kinds import IndexSpec, SearchParams, faiss_parameters

GATHER_BYTES = 64 << 20
"""Largest copy of allowed vectors that exact search gathers for one matrix product."""
GATHERED_KEPT = 4
GATHERED_KEPT_BYTES = 128 << 20
"""A search keeps the gathered vectors of its last few selections (up to these bounds):
serving traffic repeats its filters, and the copy costs several single queries."""
BLAS_GAIN = 4
"""How many times cheaper a vector score is in a gathered matrix product than one by one."""
MAX_EF = 4096
MAX_RAISE = 2
"""A filtered ANN search at least doubles its effort once half the slots or fewer remain."""

CUT_SHARE = 200
"""A held-out search cuts the links of at most one node in this many at a time."""

Answer = tuple[np.ndarray, np.ndarray]
_FLOAT32, _INT64 = np.dtype(np.float32), np.dtype(np.int64)


class Selection:
    """The slots a search may return: a mask over slots and how many it allows, with the
    FAISS selector and search parameters built over it. They are kept with the mask (which
    the table caches per filter until the next write) because building them costs about as
    much as a small search."""

    __slots__ = ("_params", "_selector", "allowed", "mask")

    def __init__(self, mask: np.ndarray, allowed: int | None = None) -> None:
        self.mask = mask
        self.allowed = int(np.count_nonzero(mask)) if allowed is None else allowed
        self._selector: tuple[faiss.IDSelectorBitmap, np.ndarray] | None = None
        self._params: dict[tuple[str, SearchParams], faiss.SearchParameters] = {}

    def selector(self) -> faiss.IDSelectorBitmap:
        if self._selector is None:
            bits = np.packbits(self.mask, bitorder="little")  # must outlive the selector
            self._selector = (faiss.IDSelectorBitmap(len(self.mask), faiss.swig_ptr(bits)), bits)
        return self._selector[0]

    def params(
        self, family: str, chosen: SearchParams, nprobe_default: int
    ) -> faiss.SearchParameters:
        key = (family, chosen._replace(nprobe=chosen.nprobe or nprobe_default))
        found = self._params.get(key)
        if found is None:
            found = faiss_parameters(family, self.selector(), chosen, nprobe_default)
            self._params[key] = found
        return found


def probe_k(k: int) -> int:
    """Hits a filtered ANN search asks for: enough beyond k to tell a region that holds
    allowed slots from one that holds barely k."""
    return max(2 * k, k + 10)


def search(
    index: faiss.Index, queries: np.ndarray, k: int, params: faiss.SearchParameters | None
) -> Answer:
    """`index.search` without FAISS's Python wrapper, whose checks and conversions cost
    about a tenth of a single HNSW query."""
    queries = np.ascontiguousarray(queries, _FLOAT32)  # no copy when they are
    n = len(queries)
    distances = np.empty((n, k), _FLOAT32)  # dtype objects: a type costs a lookup per call
    labels = np.empty((n, k), _INT64)
    ptr = faiss.swig_ptr
    index.search_c(n, ptr(queries), k, ptr(distances), ptr(labels), params)
    return distances, labels


def empty(nq: int) -> Answer:
    return np.zeros((nq, 0), "f4"), np.full((nq, 0), -1, "i8")


class IndexSearch:
    """Searches over one index as it stands; the store makes a new one when the index is
    replaced (built, trained, compacted, loaded)."""

    def __init__(self, index: faiss.Index, spec: IndexSpec, *, built: bool, nprobe: int | None):
        self.index = index
        self.family = spec.family if built else "flat"
        self.hnsw_m = spec.hnsw_m
        self.nlist = faiss.extract_index_ivf(index).nlist if self.family.startswith("ivf") else 1
        self.nprobe_default = nprobe or min(self.nlist, max(8, self.nlist // 32))
        self._unfiltered: dict[SearchParams, faiss.SearchParameters | None] = {}
        self._held_out: HeldOutGraph | None = None
        self._gathered: dict[int, tuple[Selection, np.ndarray, np.ndarray]] = {}
        self._gathering = threading.Lock()

    def unfiltered(self, queries: np.ndarray, k: int, chosen: SearchParams) -> Answer:
        params = self._unfiltered.get(chosen)
        if params is None:
            params = self._unfiltered[chosen] = faiss_parameters(
                self.family, None, chosen, self.nprobe_default
            )
        return search(self.index, queries, k, params)

    def held_out(self) -> HeldOutGraph | None:
        """The copy of this HNSW graph that held-out searches run on (made at the first one,
        kept with this search); None for kinds without a graph."""
        if self.family != "hnsw":
            return None
        with HeldOutGraph.making:
            if self._held_out is None:
                self._held_out = HeldOutGraph(self)
        return self._held_out

    def ann_work(self, chosen: SearchParams) -> float:
        """Roughly how many vectors one ANN query scores at this effort."""
        if self.family == "hnsw":
            return float(chosen.ef * self.hnsw_m)
        return (chosen.nprobe or self.nprobe_default) * self.index.ntotal / self.nlist

    def raised(self, chosen: SearchParams, k: int, share: float) -> SearchParams:
        """The effort for a search where `share` of the slots are allowed."""
        if self.family == "hnsw":
            ef = max(chosen.ef * min(1 / share, MAX_RAISE), k / share, probe_k(k))
            return chosen._replace(ef=min(math.ceil(ef), max(chosen.ef, MAX_EF)))
        nprobe = math.ceil((chosen.nprobe or self.nprobe_default) / share)
        return chosen._replace(nprobe=min(self.nlist, nprobe))

    def filtered(
        self, queries: np.ndarray, k: int, selection: Selection, chosen: SearchParams
    ) -> Answer:
        """Top-k among the slots `selection` allows, k of them whenever k exist."""
        allowed, slots = selection.allowed, len(selection.mask)
        if allowed == 0:
            return empty(len(queries))
        k = min(k, allowed)
        raised = self._ann_effort(len(queries), k, allowed, slots, chosen)
        if raised is None:
            return self.exact(queries, k, selection)
        kk = min(probe_k(k), allowed)
        params = selection.params(self.family, raised, self.nprobe_default)
        distances, labels = search(self.index, queries, kk, params)
        short = np.flatnonzero(labels[:, kk - 1] < 0)  # FAISS fills rows from the front
        distances, labels = distances[:, :k], labels[:, :k]
        if short.size:
            distances[short], labels[short] = self.exact(queries[short], k, selection)
        return distances, labels

    def _ann_effort(
        self, nq: int, k: int, allowed: int, slots: int, chosen: SearchParams
    ) -> SearchParams | None:
        """The raised effort of a filtered ANN search of `nq` queries for k (<= `allowed`)
        hits among `allowed` of `slots`; None where scoring the allowed slots exactly costs
        less."""
        if self.family in ("flat", "sq"):
            return None
        raised = self.raised(chosen, k, allowed / slots)
        gathers = self._gathers(nq, allowed, slots)
        if allowed / (BLAS_GAIN if gathers else 1) <= self.ann_work(raised):
            return None
        return raised

    def _scans(self, k: int, allowed: int, slots: int, chosen: SearchParams) -> bool:
        """Whether `filtered` answers one query among `allowed` of `slots` by scoring the
        exact vectors through the selector, slot by slot (`exact` without gathering them)."""
        return (
            allowed > 0
            and self.family != "ivf"
            and not self._gathers(1, allowed, slots)
            and self._ann_effort(1, min(k, allowed), allowed, slots, chosen) is None
        )

    def leaving_out(
        self,
        queries: np.ndarray,
        k: int,
        base: Selection,
        excluded: list[np.ndarray],
        chosen: SearchParams,
    ) -> Answer:
        """`filtered` of each row among the slots `base` allows less the row's `excluded`
        (live slots), padded with -1 to k. The rows that `filtered` would answer by a scan
        through a selector of their own (stores small enough that exact scoring costs less
        than the ANN search) share one scan through `base`'s, for k plus their most excluded
        slots, each row's excluded dropped after: the same scores, where building a selector
        and parameters per row cost more than the row's scan. The other rows are searched
        one at a time, each through its own selection."""
        n, allowed, slots = len(queries), base.allowed, len(base.mask)
        distances, labels = np.zeros((n, k), _FLOAT32), np.full((n, k), -1, _INT64)
        inside = [ex[base.mask[ex]] if ex.size else ex for ex in excluded]
        scan = [
            r for r, ex in enumerate(inside) if self._scans(k, allowed - ex.size, slots, chosen)
        ]
        if scan:
            distances[scan], labels[scan] = self._scan_leaving_out(
                queries[scan], k, base, [inside[r] for r in scan]
            )
        for r in sorted(set(range(n)) - set(scan)):
            selection = base
            if inside[r].size:
                mask = base.mask.copy()
                mask[inside[r]] = False
                selection = Selection(mask, allowed - inside[r].size)
            found, at = self.filtered(queries[r : r + 1], k, selection, chosen)
            distances[r, : at.shape[1]], labels[r, : at.shape[1]] = found[0], at[0]
        return distances, labels

    def _scan_leaving_out(
        self, queries: np.ndarray, k: int, base: Selection, inside: list[np.ndarray]
    ) -> Answer:
        """One scan through `base`'s selector for k plus the most slots a row excludes
        (`inside`: those `base` allows), each row's dropped after; padded with -1 to k."""
        wide = min(k + max(ex.size for ex in inside), base.allowed)
        params = base.params("flat", SearchParams(0, None, 0), 1)  # as `exact` asks
        found, at = search(self._flat(), queries, wide, params)
        distances, labels = (
            np.zeros((len(queries), k), _FLOAT32),
            np.full((len(queries), k), -1, _INT64),
        )
        blocked = np.zeros(len(base.mask) + 1, dtype=bool)
        blocked[-1] = True  # where a -1 label (a short row's padding) reads
        for row, ex in enumerate(inside):
            blocked[ex] = True
            keep = np.flatnonzero(~blocked[at[row]])[:k]
            blocked[ex] = False
            distances[row, : keep.size], labels[row, : keep.size] = found[row, keep], at[row, keep]
        return distances, labels

    def _gathers(self, nq: int, allowed: int, slots: int) -> bool:
        """Whether exact search gathers the allowed vectors: always for a batch, for a
        single query when at most a quarter of the slots are allowed (else one scan through
        the selector costs about the same), never past GATHER_BYTES nor for SQ8's codes."""
        if self.family == "sq" or allowed * self.index.d * 4 > GATHER_BYTES:
            return False
        return nq > 1 or 4 * allowed <= slots

    def _gathered_vectors(self, selection: Selection) -> tuple[np.ndarray, np.ndarray]:
        """(slots, vectors) that `selection` allows; kept for the last few selections that
        allow at most a quarter of the slots (a larger copy only serves the batch at hand)."""
        if 4 * selection.allowed > len(selection.mask):
            slots = np.flatnonzero(selection.mask)
            return slots, self._flat().reconstruct_batch(slots)
        key = id(selection)
        with self._gathering:
            found = self._gathered.pop(key, None)
            if found is not None:
                self._gathered[key] = found  # most recently used last
                return found[1], found[2]
        slots = np.flatnonzero(selection.mask)
        vectors = self._flat().reconstruct_batch(slots)
        with self._gathering:
            self._gathered[key] = (selection, slots, vectors)
            while len(self._gathered) > GATHERED_KEPT or (
                len(self._gathered) > 1
                and sum(v.nbytes for _, _, v in self._gathered.values()) > GATHERED_KEPT_BYTES
            ):
                self._gathered.pop(next(iter(self._gathered)))
        return slots, vectors

    def _flat(self) -> faiss.Index:
        """The index that holds the exact vectors by slot."""
        if self.family == "hnsw":
            return faiss.downcast_index(self.index.storage)
        if self.family == "ivfpq":
            return faiss.downcast_index(self.index.refine_index)
        return self.index

    def exact(self, queries: np.ndarray, k: int, selection: Selection) -> Answer:
        """Exact top-k over the slots `selection` allows, from the index's exact vectors."""
        if self.family == "ivf":
            every_list = SearchParams(0, self.nlist, 0)
            return search(self.index, queries, k, selection.params("ivf", every_list, 1))
        flat = self._flat()
        if self._gathers(len(queries), selection.allowed, len(selection.mask)):
            slots, vectors = self._gathered_vectors(selection)
            distances, at = faiss.knn(queries, vectors, k, flat.metric_type)
            return distances, np.where(at >= 0, slots[at], -1)
        params = selection.params("flat", SearchParams(0, None, 0), 1)
        return search(flat, queries, k, params)


class HeldOutGraph:
    """A copy of an HNSW index in which stored records can be searched as if they were not
    in the graph: the level-0 links out of their nodes are cut for the search and restored
    after, a few nodes at a time (at most one in CUT_SHARE), so that the cut nodes barely
    change the graph the others walk. A query at such a node then reaches its neighbours as
    a new point would, not along the node's own links. Nodes that also sit on upper levels
    (one in M) keep their links: a search descends onto the query's node there, and cut, it
    would stop at once; those few queries read high by at most their share of 1 - recall."""

    making = threading.Lock()

    def __init__(self, over: IndexSearch) -> None:
        self.over = copy.copy(over)
        self.over.index = faiss.clone_index(over.index)
        self.over._unfiltered, self.over._held_out, self.over._gathered = {}, None, {}
        graph = self.over.index.hnsw
        self.links = faiss.rev_swig_ptr(graph.neighbors.data(), graph.neighbors.size())
        self.offsets = faiss.vector_to_array(graph.offsets)
        self.levels = faiss.vector_to_array(graph.levels)
        self.lock = threading.Lock()

    def search(
        self, queries: np.ndarray, slots: np.ndarray, k: int, chosen: SearchParams
    ) -> Answer:
        """The unfiltered search of each query with its own node (`slots`, one per query)
        cut out of the graph; the node itself may still be among the hits."""
        step = max(1, self.over.index.ntotal // CUT_SHARE)
        distances, labels = [], []
        with self.lock:
            for start in range(0, len(slots), step):
                cut = [s for s in slots[start : start + step].tolist() if self.levels[s] == 1]
                ranges = [slice(self.offsets[s], self.offsets[s + 1]) for s in cut]
                saved = [self.links[r].copy() for r in ranges]
                try:
                    for r in ranges:
                        self.links[r] = -1
                    d, i = self.over.unfiltered(queries[start : start + step], k, chosen)
                finally:
                    for r, links in zip(ranges, saved, strict=True):
                        self.links[r] = links
                distances.append(d)
                labels.append(i)
        return np.concatenate(distances), np.concatenate(labels)
