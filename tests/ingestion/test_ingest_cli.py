"""`embedrec ingest`, `query` and `datasets` as a user runs them, including a kill -9 mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedrec.cli import main
from embedrec.common.config import ConfigFileError
from embedrec.common.settings import cache_root
from embedrec.data.datasets import export_catalog
from embedrec.data.fetching import DatasetUnavailable
from embedrec.embedders import get_embedder
from embedrec.ingestion.commands import _embedder_options
from embedrec.ingestion.config import load_ingest_config
from embedrec.ingestion.manifest import manifest_path, read_manifest
from embedrec.stores import open_store

REPO = Path(__file__).resolve().parents[2]
MOVIES = {
    "1": ("Toy Story", 1995, "Animation|Children's|Comedy"),
    "2": ("GoldenEye", 1995, "Action|Adventure|Thriller"),
    "3": ("Jurassic Park", 1993, "Action|Adventure|Sci-Fi"),
    "4": ("Sleepless in Seattle", 1993, "Comedy|Romance"),
    "5": ("The Silence of the Lambs", 1991, "Drama|Thriller"),
    "6": ("Finding Nemo", 2003, "Animation|Children's|Comedy"),
    "7": ("The Matrix", 1999, "Action|Sci-Fi"),
    "8": ("Amelie", 2001, "Comedy|Romance"),
}
TEXT_FLAGS = ["--id-col", "item_id", "--text", "{title} ({year}): {genres}"]
TEXT_FLAGS += ["--metadata", "title,year:int,genres:list", "--no-progress"]


@pytest.fixture
def real_cache() -> Path:
    """Where the datasets are cached, read before the test points EMBEDREC_CACHE elsewhere."""
    return cache_root()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_cache: Path) -> Path:
    monkeypatch.setenv("EMBEDREC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_catalog(path: Path, movies: dict[str, tuple[str, int | str, str]]) -> Path:
    lines = ["item_id,title,year,genres"]
    lines += [f'{i},"{t}",{y},{g}' for i, (t, y, g) in movies.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def summary_of(out: str) -> dict[str, str]:
    pairs = (line.strip().split("  ", 1) for line in out.splitlines() if "  " in line.strip())
    return {k.strip(): v.strip() for k, v in pairs}


def test_ingest_with_flags_then_query(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_catalog(tmp_path / "items.csv", MOVIES)
    store = tmp_path / "movies"
    uri = f"faiss:{store}?index=HNSW32"
    # a device in the spec needs no --device (whose default must not clash with it)
    on_cpu = ["--embedder", "text?device=cpu"]
    rc = main(["ingest", "--source", str(path), "--store", uri, *TEXT_FLAGS, *on_cpu])
    out = capsys.readouterr().out
    assert rc == 0
    summary = summary_of(out)
    assert {k: summary[k] for k in ("rows read", "embedded", "upserted", "rejected")} == {
        "rows read": "8",
        "embedded": "8",
        "upserted": "8",
        "rejected": "0",
    }
    assert float(summary["seconds"]) > 0 and "rows/s" in summary
    # query finds the embedder that built the store by itself
    assert main(["query", "--store", f"faiss:{store}", "--text", "The Matrix", "--k", "3"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert len(rows) == 3 and "The Matrix" in rows[0] and "Action|Sci-Fi" in rows[0]
    flt = '{"genres": {"$in": ["Romance"]}}'
    assert (
        main(["query", "--store", f"faiss:{store}", "--text", "cartoon fish", "--filter", flt]) == 0
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and all("Romance" in r for r in rows)


def test_config_file_with_flag_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        "".join(
            f'{{"item_id": {i}, "title": "{t}", "year": {y}, "genres": "{g}"}}\n'
            for i, (t, y, g) in MOVIES.items()
        )
    )
    config = tmp_path / "c.toml"
    config.write_text(
        f'[source]\npath = "{path}"\nid = "item_id"\ntext = "{{title}}"\n'
        'metadata = ["year:int"]\n'
        f'[store]\nuri = "faiss:{tmp_path / "store"}"\n[ingest]\nbatch_size = 3\n'
    )
    assert (
        main(["ingest", "--config", str(config), "--no-progress", "--metadata", "genres:list"]) == 0
    )
    assert summary_of(capsys.readouterr().out)["upserted"] == "8"
    with open_store(f"faiss:{tmp_path / 'store'}") as store:
        # the flag replaced the config's metadata list
        assert store.fetch(["7"])[0].metadata == {"genres": ["Action", "Sci-Fi"]}


def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[source]\npath = "x.csv"\nid = "id"\ntext = "{t}"\ncolour = "red"\n')
    assert main(["ingest", str(config)]) == 2
    assert "unknown key 'colour' in [source]" in capsys.readouterr().err
    config.write_text('[sauce]\npath = "x.csv"\n')
    with pytest.raises(ConfigFileError, match=r"unknown section \[sauce\]"):
        load_ingest_config(config)
    config.write_text('[ingest]\nbatch_size = "many"\n')
    with pytest.raises(ConfigFileError, match=r"\[ingest\] batch_size: Input should be"):
        load_ingest_config(config)
    config.write_text("[source\n")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_ingest_config(config)
    assert main(["ingest", "--store", "faiss:"]) == 2
    assert "no catalog" in capsys.readouterr().err


def test_embedder_batch_size_is_a_number_or_auto(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    for value, expected in (('"auto"', "auto"), ("128", 128)):
        config.write_text(f'[embedder]\nspec = "image"\nbatch_size = {value}\n')
        embedder = load_ingest_config(config).embedder
        assert embedder.batch_size == expected
        assert get_embedder(embedder.spec, **_embedder_options(embedder)).batch_size == expected
    config.write_text('[embedder]\nbatch_size = "big"\n')
    with pytest.raises(ConfigFileError, match=r"\[embedder\] batch_size: .* or .auto., not .big."):
        load_ingest_config(config)


def test_the_example_configs_validate() -> None:
    movielens = load_ingest_config(REPO / "configs" / "movielens.toml")
    assert movielens.source.dataset == "movielens" and movielens.embedder.spec == "text"
    # the README's store, ./data/movies from the repository root, wherever the command runs
    assert movielens.store.uri.startswith(f"faiss:{REPO / 'data' / 'movies'}?")
    fashion = load_ingest_config(REPO / "configs" / "fashion.toml")
    assert fashion.source.dataset == "fashion-mnist" and fashion.source.image == "image"
    assert fashion.embedder.spec == "image?image_size=112" and fashion.source.limit


def test_max_rejects_exits_nonzero_and_keeps_what_landed(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = {f"b{i}": ("", "", "") for i in range(3)}  # empty text, after the good rows
    path = write_catalog(tmp_path / "items.csv", MOVIES | bad)
    store = f"faiss:{tmp_path / 'store'}"
    rejects = tmp_path / "rejects.jsonl"
    args = ["ingest", "--source", str(path), "--store", store, "--batch-size", "4"]
    args += ["--max-rejects", "1", "--rejects", str(rejects), *TEXT_FLAGS]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "aborted after 2 rejected rows (limit 1)" in captured.err
    assert summary_of(captured.out)["upserted"] == "8"
    assert len(rejects.read_text().splitlines()) == 2
    with open_store(store) as opened:
        assert opened.count() == 8


def test_query_of_a_missing_store_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store = f"faiss:{tmp_path / 'nothing'}"
    assert main(["query", "--store", store, "--text", "x"]) == 2
    err = capsys.readouterr().err  # a foreign store: test_store_info_cli
    assert f"no store at {store}: build it with `embedrec ingest`" in err
    assert "pass dim" not in err


def test_datasets_list(capsys: pytest.CaptureFixture) -> None:
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "movielens" in out and "fashion-mnist" in out


def _manifest_count(path: Path) -> int:
    read = read_manifest(path) if path.exists() else None  # None: its tables not yet written
    return 0 if read is None else len(read[1])


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    n = 480  # long enough that checkpoints land well before the end, even on a fast machine
    movies = {f"m{i}": (f"Catalog item {i}", 1900 + i % 100, "Drama") for i in range(n)}
    path = write_catalog(tmp_path / "items.csv", movies)
    uri = f"faiss:{tmp_path / 'store'}?index=HNSW32"
    args = ["ingest", "--source", str(path), "--store", uri, "--batch-size", "8"]
    args += ["--checkpoint-seconds", "0", *TEXT_FLAGS]
    book = manifest_path(path, uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedrec.cli", *args],
        env=os.environ | {"EMBEDREC_CACHE": os.environ["EMBEDREC_CACHE"]},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    try:
        while _manifest_count(book) < 24:
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the ingest never checkpointed"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = _manifest_count(book)
    assert 24 <= done < n, "the run was not cut part-way"
    with open_store(f"faiss:{tmp_path / 'store'}") as store:
        assert store.count() >= done  # everything the manifest lists is durably in the store

    assert main(args) == 0
    summary = summary_of(capsys.readouterr().out)
    assert int(summary["unchanged"]) == done
    assert int(summary["upserted"]) == n - done
    assert int(summary["embedded"]) + int(summary["cache hits"]) == n - done
    with open_store(f"faiss:{tmp_path / 'store'}") as store:
        assert store.count() == n
        assert sorted(r.id for r in store.fetch(list(movies))) == sorted(movies)
    assert _manifest_count(book) == n


@pytest.mark.slow
def test_movielens_config_end_to_end(
    tmp_path: Path, real_cache: Path, capsys: pytest.CaptureFixture
) -> None:
    """configs/movielens.toml on the real catalog; "Star Wars" finds its sequels."""
    try:
        catalog = export_catalog("movielens", tmp_path / "movielens.csv", cache=real_cache)
    except DatasetUnavailable as exc:
        pytest.skip(f"MovieLens-100k cannot be fetched here: {exc}")
    store = f"faiss:{tmp_path / 'movies'}"
    config = str(REPO / "configs" / "movielens.toml")
    assert (
        main(["ingest", config, "--source", str(catalog), "--store", store, "--no-progress"]) == 0
    )
    assert summary_of(capsys.readouterr().out)["upserted"] == "1,682"
    assert main(["query", "--store", store, "--text", "Star Wars", "--k", "3"]) == 0
    top3 = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert any("Return of the Jedi" in r or "Empire Strikes Back" in r for r in top3[:3])


@pytest.mark.slow
def test_fashion_config_on_a_few_images(
    tmp_path: Path, real_cache: Path, capsys: pytest.CaptureFixture
) -> None:
    try:
        catalog = export_catalog("fashion-mnist", tmp_path / "fashion.csv", limit=12)
    except DatasetUnavailable as exc:
        pytest.skip(f"Fashion-MNIST is not available here: {exc}")
    store = f"faiss:{tmp_path / 'fashion'}"
    config = str(REPO / "configs" / "fashion.toml")
    args = ["ingest", config, "--source", str(catalog), "--store", store, "--no-progress"]
    assert main(args) == 0
    assert summary_of(capsys.readouterr().out)["upserted"] == "12"
    image = next((tmp_path / "fashion_images").glob("*.png"))
    assert main(["query", "--store", store, "--image", str(image), "--k", "1"]) == 0
    assert image.stem in capsys.readouterr().out
