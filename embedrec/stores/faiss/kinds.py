"""The FAISS index kinds a store can hold: their names, parsing, and the FAISS objects
(empty indexes, search parameters) each kind needs.

Kinds (FAISS factory strings): `Flat` (exact), `HNSW{M}`, `IVF{n},Flat`, `IVF{n},PQ{m}`
(always with a flat refine stage, so fetch and re-ranking use the exact vectors) and `SQ8`.
`IVF,Flat` / `IVF,PQ{m}` leave nlist to be chosen from the data size at build time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import faiss
import numpy as np

from embedrec.stores.base import METRICS, Capabilities
from embedrec.stores.errors import ConfigError
from embedrec.stores.uri import StoreURI

_KIND_PATTERNS = {
    "flat": re.compile(r"Flat"),
    "hnsw": re.compile(r"HNSW(?P<m>\d*)(,Flat)?"),
    "ivf": re.compile(r"IVF(?P<nlist>\d*),Flat"),
    "ivfpq": re.compile(r"IVF(?P<nlist>\d*),PQ(?P<pq>\d+)(x(?P<bits>\d+))?(,RFlat)?"),
    "sq": re.compile(r"SQ8"),
}
_SEARCH_PARAMS = {"hnsw": ("ef",), "ivf": ("nprobe",), "ivfpq": ("nprobe", "k_factor")}


MAX_SEARCH_PARAM = 1 << 20
HNSW_M = (2, 512)
PQ_BITS = (1, 16)


class SearchParams(NamedTuple):
    """One search's effort: HNSW's ef, IVF's nprobe (None: the index's default) and the
    PQ refine stage's k_factor."""

    ef: int
    nprobe: int | None
    k_factor: int

    def override(self, params: dict[str, Any]) -> SearchParams:
        """These search params with a call's search params in their place, checked."""
        return self._replace(**{name: _search_param(name, value) for name, value in params.items()})


def _search_param(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"search param {name} must be an integer, got {value!r}")
    if not 1 <= value <= MAX_SEARCH_PARAM:
        raise ConfigError(f"search param {name}={value} is outside 1..{MAX_SEARCH_PARAM}")
    return int(value)


@dataclass(frozen=True)
class IndexSpec:
    """A parsed index kind."""

    family: str
    hnsw_m: int = 32
    nlist: int | None = None
    pq_m: int = 0
    pq_bits: int = 8

    @classmethod
    def parse(cls, kind: str) -> IndexSpec:
        if isinstance(kind, str):
            for family, pattern in _KIND_PATTERNS.items():
                match = pattern.fullmatch(kind.strip())
                if match is None:
                    continue
                groups = match.groupdict()
                return cls(
                    family=family,
                    hnsw_m=int(groups.get("m") or 32),
                    nlist=int(groups["nlist"]) if groups.get("nlist") else None,
                    pq_m=int(groups.get("pq") or 0),
                    pq_bits=int(groups.get("bits") or 8),
                ).checked(kind)
        raise ConfigError(
            f"unknown FAISS index kind {kind!r}; use Flat, HNSW32, IVF1024,Flat, IVF,Flat, "
            "IVF1024,PQ16 or SQ8"
        )

    def checked(self, kind: str) -> IndexSpec:
        """This spec, provided FAISS can build it (it aborts the process on an HNSW of M < 2
        and raises its own RuntimeError on the rest)."""
        limits = (
            ("HNSW M", self.hnsw_m, HNSW_M),
            ("nlist", 1 if self.nlist is None else self.nlist, (1, MAX_SEARCH_PARAM)),
            ("PQ bits", self.pq_bits, PQ_BITS),
            ("PQ m", self.pq_m, (1 if self.family == "ivfpq" else 0, MAX_SEARCH_PARAM)),
        )
        for what, value, (low, high) in limits:
            if not low <= value <= high:
                raise ConfigError(
                    f"FAISS index kind {kind!r}: {what} {value} is outside {low}..{high}"
                )
        return self

    def with_nlist(self, nlist: int | None) -> IndexSpec:
        spec = IndexSpec(self.family, self.hnsw_m, nlist, self.pq_m, self.pq_bits)
        return spec.checked(f"{self.name} with nlist={nlist}")

    @property
    def name(self) -> str:
        nlist = str(self.nlist or "")
        bits = f"x{self.pq_bits}" if self.pq_bits != 8 else ""
        return {
            "flat": "Flat",
            "hnsw": f"HNSW{self.hnsw_m}",
            "ivf": f"IVF{nlist},Flat",
            "ivfpq": f"IVF{nlist},PQ{self.pq_m}{bits}",
            "sq": "SQ8",
        }[self.family]

    @property
    def trainable(self) -> bool:
        return self.family in ("ivf", "ivfpq", "sq")

    @property
    def min_train(self) -> int:
        """Fewest vectors worth training on; below it the store stays exact and flat."""
        floor = {"ivf": 39, "ivfpq": 4 * 2**self.pq_bits, "sq": 1}.get(self.family, 0)
        return max(floor, self.nlist or 0)  # k-means needs a point per list

    def nlist_for(self, n: int) -> int:
        return self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))

    def check_dim(self, dim: int) -> None:
        if self.family == "ivfpq" and dim % self.pq_m:
            raise ConfigError(
                f"PQ{self.pq_m} needs a dimension divisible by {self.pq_m}, not {dim}"
            )

    def capabilities(self, *, persistent: bool) -> Capabilities:
        return Capabilities(
            exact=self.family == "flat",
            search_params=_SEARCH_PARAMS.get(self.family, ()),
            max_batch=10_000,
            persistent=persistent,
            deletes=self.family in ("flat", "sq"),
            exact_vectors=self.family != "sq",
            excludes_in_search=True,
        )


@dataclass(frozen=True)
class UriOptions:
    """What a `faiss:` URI asks for: the index kind, the metric, nlist and search tuning."""

    kind: str | None
    metric: str | None
    nlist: int | None
    tuning: dict[str, Any]

    @classmethod
    def pop_from(cls, uri: StoreURI, metric: str | None) -> UriOptions:
        """Take the options from `uri` (refusing any left over), with `metric` as passed to
        `open_store`, which the URI's may not contradict."""
        kind = uri.pop("index")
        uri_metric = uri.pop("metric")
        if uri_metric is not None and uri_metric not in METRICS:
            raise ConfigError(f"{uri.raw}: unknown metric {uri_metric!r}; known: {METRICS}")
        if metric and uri_metric and metric != uri_metric:
            raise ConfigError(f"{uri.raw}: metric {metric!r} contradicts the URI's {uri_metric!r}")
        tuning = {
            "ef": uri.pop_int("ef", 64),
            "ef_construction": uri.pop_int("efConstruction", 40),
            "nprobe": uri.pop_int("nprobe"),
            "k_factor": uri.pop_int("k_factor", 4),
        }
        nlist = uri.pop_int("nlist")
        uri.done()
        return cls(kind, metric or uri_metric, nlist, tuning)


def faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def new_index(
    spec: IndexSpec, dim: int, metric: str, *, ef_construction: int, nlist: int | None = None
) -> faiss.Index:
    """An empty index of `spec`'s kind; `nlist=None` for a trainable kind gives the exact
    flat index that holds upserts until there is enough data to train on."""
    fm = faiss_metric(metric)
    if spec.family == "flat" or (spec.trainable and nlist is None):
        return faiss.IndexFlat(dim, fm)
    if spec.family == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, fm)
        index.hnsw.efConstruction = ef_construction
        return index
    if spec.family == "sq":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, fm)
    if spec.family == "ivf":
        return faiss.index_factory(dim, f"IVF{nlist},Flat", fm)
    # "np": no polysemous training, which search never uses and which is slow
    factory = f"IVF{nlist},PQ{spec.pq_m}x{spec.pq_bits}np,RFlat"
    return faiss.index_factory(dim, factory, fm)


def faiss_parameters(
    family: str, sel: Any, chosen: SearchParams, nprobe_default: int
) -> faiss.SearchParameters | None:
    """FAISS's parameters for one search on an index of `family` (the flat staging index of
    an unbuilt trainable kind counts as "flat"), with an optional selector."""
    if family == "hnsw":
        return faiss.SearchParametersHNSW(sel=sel, efSearch=chosen.ef)
    if family in ("ivf", "ivfpq"):
        ivf = faiss.SearchParametersIVF(sel=sel, nprobe=chosen.nprobe or nprobe_default)
        if family == "ivf":
            return ivf
        params = faiss.IndexRefineSearchParameters(k_factor=chosen.k_factor, base_index_params=ivf)
        params.ivf = ivf  # keep the Python wrapper alive as long as params
        return params
    return faiss.SearchParameters(sel=sel) if sel is not None else None


def _shape(index: faiss.Index) -> tuple[Any, ...]:
    """What an index file holds, in the terms a kind names: its family and parameters."""
    if isinstance(index, faiss.IndexFlat):
        return ("flat",)
    if isinstance(index, faiss.IndexHNSWFlat):
        return ("hnsw", index.hnsw.nb_neighbors(1))
    if isinstance(index, faiss.IndexScalarQuantizer):
        return ("sq", index.sq.qtype)
    if isinstance(index, faiss.IndexIVFFlat):
        return ("ivf", index.nlist)
    if isinstance(index, faiss.IndexRefineFlat):
        base = faiss.downcast_index(index.base_index)
        if isinstance(base, faiss.IndexIVFPQ):
            return ("ivfpq", base.nlist, base.pq.M, base.pq.nbits)
    return (type(index).__name__,)


_SHAPE_LABELS = {
    "hnsw": ("M",),
    "sq": ("qtype",),
    "ivf": ("nlist",),
    "ivfpq": ("nlist", "PQ", "bits"),
}


def _expected_shape(spec: IndexSpec, built: bool) -> tuple[Any, ...]:
    """`_shape` of the index a manifest of `spec` describes (None: any value)."""
    if spec.family == "flat" or (spec.trainable and not built):
        return ("flat",)
    return {
        "hnsw": ("hnsw", spec.hnsw_m),
        "sq": ("sq", faiss.ScalarQuantizer.QT_8bit),
        "ivf": ("ivf", spec.nlist),
        "ivfpq": ("ivfpq", spec.nlist, spec.pq_m, spec.pq_bits),
    }[spec.family]


def _metric_name(index: faiss.Index) -> str:
    return "l2" if index.metric_type == faiss.METRIC_L2 else "inner product"


def index_mismatch(
    spec: IndexSpec, built: bool, dim: int, metric: str, index: faiss.Index
) -> str | None:
    """None when `index` is what a manifest of (`spec`, `built`, `dim`, `metric`) describes,
    else a sentence naming both."""
    found, expected = _shape(index), _expected_shape(spec, built)
    same_kind = len(found) == len(expected) and all(
        want is None or want == got for want, got in zip(expected, found, strict=True)
    )
    if same_kind and index.d == dim and index.metric_type == faiss_metric(metric):
        return None
    state = "" if built or not spec.trainable else ", untrained: a flat staging index"
    labels = _SHAPE_LABELS.get(found[0], ())
    params = [f"{label}={value}" for label, value in zip(labels, found[1:], strict=False)]
    details = [*params, f"{index.d}-d", _metric_name(index)]
    return (
        f"the manifest says {spec.name}{state} ({dim}-d, {metric}) but the index file holds "
        f"{type(index).__name__} ({', '.join(details)})"
    )
