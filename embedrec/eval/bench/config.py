"""The TOML config of `embedrec bench` (see configs/bench.toml): datasets, store
configurations with their search-parameter sweeps, run settings and the `--quick` subset."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from embedrec.common.config import from_config_folder, load_model

Metric = Literal["l2", "cosine", "dot"]
PositiveInt = Annotated[int, Field(ge=1)]
_ENV = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Dataset(_Model):
    name: str
    """The dataset's name in the report and in `[quick]`."""
    scale_group: str | None = None
    """Datasets sharing a group (same generator, growing n) make the scale curves."""
    stores: list[str] | None = None
    """Run only these stores on this dataset (default: every store)."""
    n: PositiveInt | None = None
    """Base vectors (the first n); default: all."""
    queries: PositiveInt | None = None
    """Query vectors (the first ones); default: all."""


class FashionDataset(_Dataset):
    """Fashion-MNIST pixels, 784-d, l2: 60k base (train) / 10k queries (test), as
    ann-benchmarks' fashion-mnist-784-euclidean."""

    kind: Literal["fashion-mnist"]
    metric: Metric = "l2"
    """The distance of the exact neighbours and of every store's index."""


class CatalogTextDataset(_Dataset):
    """A catalog's items as texts through the text embedder (384-d, cosine): the items of
    the [data] section of `data` (an `embedrec train` config), each written by `template`
    from its columns (a list joined with "|", a missing value as nothing, a whole float as
    an integer). Queries are a seeded sample of the items, held out of the base."""

    kind: Literal["catalog-text"]
    data: Path
    """An `embedrec train` config whose [data.items] table is the catalog."""
    template: str
    """Each item's text, over its columns, e.g. "{title} ({year}): {genres}"."""
    metric: Metric = "cosine"
    """The distance of the exact neighbours and of every store's index."""
    query_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of the items sampled as queries (and left out of the base)."""
    seed: int = 0
    """Seed of the query sample."""

    @field_validator("data")
    @classmethod
    def _from_config_folder(cls, value: Path, info: ValidationInfo) -> Path:
        return from_config_folder(value, info, f"datasets.{info.field_name}")


class TwoTowerDataset(_Dataset):
    """A two-tower model's item vectors as the base, its user vectors as the queries (inner
    product), for the items and users of the [data] section of `data`. Skipped, with the
    reason, when the model file is absent."""

    kind: Literal["two-tower"]
    model: Path
    """The saved model (`embedrec train`'s .pt file)."""
    data: Path
    """The `embedrec train` config whose [data] gives the model's items and users."""
    metric: Metric = "dot"
    """The distance of the exact neighbours and of every store's index."""

    @field_validator("model", "data")
    @classmethod
    def _from_config_folder(cls, value: Path, info: ValidationInfo) -> Path:
        return from_config_folder(value, info, f"datasets.{info.field_name}")


class SyntheticDataset(_Dataset):
    """Gaussian clusters: the same centres and queries for every n, so a scale group
    differs only in size."""

    kind: Literal["synthetic"]
    n: PositiveInt
    queries: PositiveInt = 1000
    dim: PositiveInt = 128
    """Dimension of the vectors."""
    clusters: PositiveInt = 1024
    """Gaussian clusters the vectors are drawn around."""
    spread: float = Field(1.0, gt=0)
    """Noise scale around each centre (unit normal centres): 1.0 makes neighbouring
    clusters overlap, so that no index finds the neighbours trivially."""
    seed: int = 0
    """Seed of the centres, the base and the queries."""
    metric: Metric = "l2"
    """The distance of the exact neighbours and of every store's index."""


class PCADataset(_Dataset):
    """Another dataset's vectors reduced by PCA to `dim`; ground truth and recall stay in
    the source's full dimension."""

    kind: Literal["pca"]
    source: str
    """The name of the dataset reduced (not itself a PCA dataset)."""
    dim: PositiveInt
    """The dimensions kept: the top principal components of the source's base vectors."""


DatasetConfig = Annotated[
    FashionDataset | CatalogTextDataset | TwoTowerDataset | SyntheticDataset | PCADataset,
    Field(discriminator="kind"),
]


class BenchStore(_Model):
    name: str
    """The store's name in the report and in `[quick]`."""
    uri: str
    """A store URI with placeholders: `{dir}` a fresh folder for this store and dataset,
    `{name}` a collection/index name for them, `{env:VAR}` the variable's value (host:port
    when it is a URL)."""
    sweep: dict[str, list[int | float | bool]] = {}
    """Search params to sweep; several keys sweep their cartesian product. Empty: one run."""
    max_n: PositiveInt | None = None
    """Skip datasets with more base vectors (brute-force stores)."""
    requires: list[str] = []
    """Environment variables the store needs; unset ones skip it with the reason."""
    loopback: Literal["pinecone"] | None = None
    """Serve the store from the Pinecone loopback (`embedrec.testing`): a check of the
    harness and the store's client code, not of Pinecone's performance."""

    def params(self) -> list[dict[str, Any]]:
        keys = sorted(self.sweep)
        return [
            dict(zip(keys, vals, strict=True))
            for vals in itertools.product(*(self.sweep[k] for k in keys))
        ]

    def missing_env(self) -> list[str]:
        needed = [*self.requires, *_ENV.findall(self.uri)]
        return [v for v in dict.fromkeys(needed) if not os.environ.get(v)]

    def expand(self, folder: Path, name: str) -> str:
        def env(match: re.Match[str]) -> str:
            value = os.environ[match.group(1)]
            return urlsplit(value).netloc or value if "://" in value else value

        return _ENV.sub(env, self.uri).replace("{dir}", str(folder)).replace("{name}", name)


class RunSettings(_Model):
    k: PositiveInt = 10
    """The k of recall@k and of every search."""
    target_recall: float = Field(0.95, gt=0, le=1)
    """The recall the report's "QPS at recall" column reads the sweep at."""
    clients: list[PositiveInt] = [4, 16]
    """Concurrent client threads for the QPS runs besides the single client."""
    batch_size: PositiveInt = 1000
    """Vectors per upsert call (at most the store's max_batch)."""
    warmup: int = Field(20, ge=0)
    """Searches run before timing starts."""
    threads: PositiveInt | None = None
    """OpenMP threads in each worker (FAISS); default: the library's, all cores. With more
    threads than free cores OpenMP's spin-waiting makes FAISS many times slower, so a shared
    machine gives stable figures only with 1 (as ann-benchmarks runs each algorithm)."""
    out: Path = Path("bench-out")
    """The results folder (results.json, report.md, plots)."""
    calibrate: Path | None = None
    """A config with a [calibrate] section (configs/calibrate.toml): each store is then
    calibrated after it is built (`embedrec calibrate`), and measured once more with no
    params, that is with the calibrated defaults its `search()` uses."""

    @field_validator("out", "calibrate")
    @classmethod
    def _from_config_folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return from_config_folder(value, info, f"run.{info.field_name}")


class QuickSettings(_Model):
    """What `--quick` runs: a few datasets (capped) and stores, finishing in minutes."""

    datasets: list[str]
    """The dataset names `--quick` runs."""
    stores: list[str]
    """The store names `--quick` runs."""
    n: dict[str, PositiveInt] = {}
    """Per dataset: at most this many base vectors."""
    queries: PositiveInt = 200
    """At most this many queries a dataset."""


class BenchConfig(_Model):
    run: RunSettings = RunSettings()
    datasets: list[DatasetConfig]
    stores: list[BenchStore]
    quick: QuickSettings | None = None

    @model_validator(mode="after")
    def _references(self) -> BenchConfig:
        datasets = {d.name: d for d in self.datasets}
        stores = {s.name for s in self.stores}
        for kind, names in (
            ("dataset", [d.name for d in self.datasets]),
            ("store", [s.name for s in self.stores]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique: {dupes} appear twice")
        for d in self.datasets:
            if isinstance(d, PCADataset):
                src = datasets.get(d.source)
                if src is None or isinstance(src, PCADataset):
                    raise ValueError(
                        f"dataset {d.name!r}: source {d.source!r} is not a non-PCA dataset"
                    )
            unknown = sorted(set(d.stores or ()) - stores)
            if unknown:
                raise ValueError(f"dataset {d.name!r}: unknown stores {unknown}")
        if self.quick is not None:
            for what, given, known in (
                ("datasets", [*self.quick.datasets, *self.quick.n], datasets),
                ("stores", self.quick.stores, stores),
            ):
                unknown = sorted(set(given) - set(known))
                if unknown:
                    raise ValueError(f"quick.{what}: unknown names {unknown}")
        return self

    def dataset(self, name: str) -> DatasetConfig:
        return next(d for d in self.datasets if d.name == name)

    def for_quick(self) -> BenchConfig:
        """The `--quick` subset: its datasets (capped in n and queries) and stores."""
        if self.quick is None:
            raise ValueError("this config has no [quick] section")
        q = self.quick
        datasets = []
        for d in self.datasets:
            if d.name not in q.datasets:  # kept as a definition (a PCA source), runs nothing
                datasets.append(d.model_copy(update={"stores": []}))
                continue
            caps = [c for c in (q.n.get(d.name), d.n) if c is not None]
            n = min(caps) if caps else None
            nq = min(q.queries, d.queries or q.queries)
            datasets.append(d.model_copy(update={"n": n, "queries": nq}))
        stores = [s for s in self.stores if s.name in q.stores]
        return self.model_copy(update={"datasets": datasets, "stores": stores})


def load_bench_config(path: str | Path) -> BenchConfig:
    return load_model(path, BenchConfig)
