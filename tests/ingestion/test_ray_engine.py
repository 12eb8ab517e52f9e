"""`--engine ray`: the embedding stage on a local Ray with 2 CPUs gives the store, rejects,
resume and incremental runs of the in-process engine, to the bit (hash embedder); workers
write a store they reach (the Pinecone loopback); the CLI ingests and rebuilds on Ray."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from embedrec.cli import main
from embedrec.embedders import EmbeddingCache, InputError
from embedrec.ingestion.columns import ColumnMap, parse_metadata_spec
from embedrec.ingestion.distributed.actors import embed_batch, embed_rows
from embedrec.ingestion.distributed.engine import parse_engine
from embedrec.ingestion.distributed.stage import RayStage
from embedrec.ingestion.pipeline import ingest
from embedrec.ingestion.sources import Source
from embedrec.ingestion.summary import IngestOptions, IngestSummary, TooManyRejects
from embedrec.stores import open_store
from embedrec.testing.pinecone_loopback import LoopbackPinecone

COLUMNS = ColumnMap(
    id="item_id",
    text="{title}: {genres}",
    metadata=parse_metadata_spec("title,year:int,genres:list"),
)
SPEC = "hash:32"
GENRES = ["Drama", "Comedy", "Action", "Horror", "Romance"]


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackPinecone]:
    """A Pinecone that the Ray workers reach too: they take its settings from the
    environment of the process that starts Ray."""
    server = LoopbackPinecone()
    env = {"PINECONE_API_KEY": "loopback-key", "PINECONE_CONTROLLER_HOST": server.url}
    saved = {key: os.environ.get(key) for key in [*env, "PINECONE_HOST"]}
    os.environ.update(env)
    os.environ.pop("PINECONE_HOST", None)
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.close()
    assert server.violations == []


@pytest.fixture(scope="module")
def ray_cluster(loopback: LoopbackPinecone):
    ray = pytest.importorskip("ray", reason="ray is not installed (the `ray` extra)")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an ingest keeps under $EMBEDREC_CACHE (live edits, a default manifest) stays in
    the test's folder."""
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache-root"))


def write_catalog(path: Path, n: int, *, bad: tuple[int, ...] = (), edit: int = 0) -> Path:
    """`n` rows (some repeating an earlier row's text); rows in `bad` have a bad year, and
    one row per 50 repeats an earlier id; the first `edit` rows get a new title."""
    lines = ["item_id,title,year,genres"]
    for i in range(n):
        title = f"Movie {i % 37} part {i}" if i % 7 else "A title shared by many"
        title = f"Edited {title}" if i < edit else title
        year = f"x{1950 + i}" if i in bad else str(1950 + i % 60)
        rid = f"m{i - 1}" if i % 50 == 49 else f"m{i}"
        lines.append(f"{rid},{title},{year},{GENRES[i % 5]}|{GENRES[(i + 2) % 5]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run(
    path: Path, where: Path, engine: str | RayStage, uri: str | None = None, **options
) -> IngestSummary:
    """An ingest of `path` into `uri` (default: a FAISS store under `where`) with its own
    manifest, rejects and cache under `where`; `engine`: local, ray or a RayStage."""
    options.setdefault("batch_size", 64)
    stage = RayStage(SPEC, window_rows=500) if engine == "ray" else engine
    stage = None if stage == "local" else stage
    with EmbeddingCache(where / "cache") as cache:
        return ingest(
            Source(path, COLUMNS),
            uri or f"faiss:{where / 'store'}",
            SPEC,
            IngestOptions(rejects=where / "rejects.jsonl", **options),
            cache=cache,
            manifest=where / "manifest.sqlite",
            stage=stage,
        )


def contents(where: Path, uri: str | None = None) -> dict[str, tuple[bytes, dict]]:
    with open_store(uri or f"faiss:{where / 'store'}") as store:
        ids = [f"m{i}" for i in range(5000)]
        return {r.id: (r.vector.tobytes(), r.metadata) for r in store.fetch(ids)}


def figures(summary: IngestSummary) -> dict:
    out = asdict(summary)
    for key in ("seconds", "rejects_path", "manifest"):
        out.pop(key)
    return out


def rejects(where: Path) -> list[dict]:
    path = where / "rejects.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(lines, key=lambda r: r["row"])


def test_the_same_store_rejects_and_summary_as_in_process(tmp_path: Path, ray_cluster) -> None:
    path = write_catalog(tmp_path / "items.csv", 1500, bad=(10, 700, 1400))
    local, remote = tmp_path / "local", tmp_path / "ray"
    first = run(path, local, "local"), run(path, remote, "ray")
    assert figures(first[0]) == figures(first[1])
    assert first[1].upserted == 1500 - 3 - 30 and first[1].rejected == 33
    assert contents(local) == contents(remote) and len(contents(remote)) == 1467
    assert rejects(local) == rejects(remote) and len(rejects(remote)) == 33
    # incremental: only the edited rows are embedded again, by either engine
    write_catalog(path, 1500, bad=(10, 700, 1400), edit=100)
    again = run(path, local, "local"), run(path, remote, "ray")
    assert figures(again[0]) == figures(again[1])
    assert again[1].unchanged == 1467 - 97 and again[1].upserted == 97  # 3 of 100 rejected
    assert contents(local) == contents(remote)


def test_an_aborted_run_keeps_what_landed_and_resumes(tmp_path: Path, ray_cluster) -> None:
    path = write_catalog(tmp_path / "items.csv", 900, bad=(300, 610, 620))
    local, remote = tmp_path / "local", tmp_path / "ray"
    aborted = []
    for where, engine in ((local, "local"), (remote, "ray")):
        with pytest.raises(TooManyRejects) as err:
            run(path, where, engine, max_rejects=2, checkpoint_seconds=3600)
        aborted.append(err.value.summary)
    assert figures(aborted[0]) == figures(aborted[1])
    assert contents(local) == contents(remote) and len(contents(remote)) == aborted[1].upserted
    assert 0 < aborted[1].upserted < 900
    write_catalog(path, 900)  # fixed: the rerun embeds only what did not land
    resumed = run(path, local, "local"), run(path, remote, "ray")
    assert figures(resumed[0]) == figures(resumed[1])
    assert resumed[1].unchanged == aborted[1].upserted
    assert contents(local) == contents(remote) and len(contents(remote)) == 900 - 18


def test_workers_write_a_store_they_reach(tmp_path: Path, ray_cluster, loopback) -> None:
    """Pinecone (as a Qdrant server) is written from Ray tasks, the manifest on the driver."""
    path = write_catalog(tmp_path / "items.csv", 700, bad=(10,))
    name = "t-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10]
    stage = RayStage(SPEC, window_rows=300)
    uris = {engine: f"pinecone://{name}-{engine}?create=1" for engine in ("local", "ray")}
    local = run(path, tmp_path / "local", "local", uris["local"])
    remote = run(path, tmp_path / "ray", stage, uris["ray"])
    assert figures(local) == figures(remote) and remote.upserted == 700 - 1 - 14
    assert stage.parts_written >= 3  # every batch, through the workers
    assert contents(tmp_path, uris["ray"]) == contents(tmp_path, uris["local"])
    assert len(contents(tmp_path, uris["ray"])) == remote.upserted
    again = run(path, tmp_path / "ray", RayStage(SPEC, window_rows=300), uris["ray"])
    assert (again.unchanged, again.upserted) == (remote.upserted, 0)


class Refuses:
    """An embedder that refuses texts holding "bad", as a model refuses an input."""

    name, dim, modality = "refuses", 4, "text"

    def embed(self, batch: list[str]) -> np.ndarray:
        for i, text in enumerate(batch):
            if "bad" in text:
                raise InputError(i, f"refused {text!r}")
        return np.full((len(batch), 4), 0.5, dtype=np.float32)


def test_a_worker_rejects_only_the_inputs_the_embedder_refuses() -> None:
    items = [f"good {i}" for i in range(600)]
    items[3], items[400] = "bad one", "bad two"
    vectors, errors = embed_rows(Refuses(), items)
    assert [i for i, e in enumerate(errors) if e] == [3, 400]
    assert errors[400] == "refused 'bad two'"
    assert not vectors[3].any() and (vectors[[0, 399, 401]] == 0.5).all()


def test_a_batch_of_objects_travels_pickled() -> None:
    batch = {"pos": np.arange(2), "input": np.array([pickle.dumps("a b"), pickle.dumps("c")])}
    out = embed_batch(batch, SPEC, (), True)
    assert out["vector"].shape == (2, 32) and list(out["error"]) == ["", ""]


def test_a_failure_on_the_workers_is_one_clear_error(tmp_path: Path, ray_cluster) -> None:
    path = write_catalog(tmp_path / "items.csv", 100)
    stage = RayStage(SPEC, {"bogus": 1})  # the driver's embedder has no such option
    failed = r"embedding on Ray failed: .*takes no options, got bogus"
    with EmbeddingCache(tmp_path / "cache") as cache, pytest.raises(ValueError, match=failed):
        ingest(
            Source(path, COLUMNS),
            f"faiss:{tmp_path / 'store'}",
            SPEC,
            cache=cache,
            manifest=tmp_path / "manifest.sqlite",
            stage=stage,
        )


def test_the_engine_flag() -> None:
    assert parse_engine("local") is None
    assert parse_engine("ray") == ""
    assert parse_engine("ray:ray://head:10001") == "ray://head:10001"
    for bad in ("ray:", "spark", "local:x"):
        with pytest.raises(ValueError, match="--engine"):
            parse_engine(bad)


def test_the_cli_ingests_and_rebuilds_on_ray(
    tmp_path: Path, ray_cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = write_catalog(tmp_path / "items.csv", 300)
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    args = ["ingest", "--source", str(path), "--id-col", "item_id", "--text", "{title}"]
    args += ["--metadata", "title,year:int,genres:list", "--embedder", SPEC, "--no-progress"]
    assert main([*args, "--store", f"faiss:{tmp_path / 'ray' / 'store'}", "--engine", "ray"]) == 0
    out = capsys.readouterr()
    assert "embedding on Ray: 1 node(s), 2 CPUs, 0 GPUs" in out.err
    assert "Dataset" not in out.out  # stdout holds the summary alone
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache-local"))
    assert main([*args, "--store", f"faiss:{tmp_path / 'local' / 'store'}"]) == 0
    assert contents(tmp_path / "ray") == contents(tmp_path / "local")
    assert main([*args, "--store", "faiss:", "--engine", "spark"]) == 2
    assert "--engine 'spark': expected local, ray or ray:ADDRESS" in capsys.readouterr().err
    alias = f"faiss:{tmp_path / 'alias'}"  # a new generation, built on Ray, then swapped in
    assert main([*args, "--store", alias, "--rebuild", "--engine", "ray"]) == 0
    err = capsys.readouterr().err
    assert "embedding on Ray" in err and "building generation" in err
    assert contents(tmp_path, alias) == contents(tmp_path / "local")
