"""A relative path in a config file is taken from the file's folder, whatever the working
directory; one given by a flag from the working directory; errors name the key it came from.

Each test writes its config in `conf/` and runs from a third folder, `elsewhere/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedrec.cli import main
from embedrec.common.config import ConfigFileError
from embedrec.data.tables import CatalogError
from embedrec.eval.bench.config import load_bench_config
from embedrec.eval.drift.config import load_drift_config
from embedrec.eval.models.config import load_experiment_config
from embedrec.ingestion.config import load_ingest_config
from embedrec.retrieval.client import Recommender
from embedrec.retrieval.config import load_serve_config
from embedrec.stores import StoreNotFound, open_store
from embedrec.stores.errors import ConfigError
from embedrec.stores.uri import located_in

ITEMS = [
    {"item_id": "1", "title": "Toy Story"},
    {"item_id": "2", "title": "GoldenEye"},
    {"item_id": "3", "title": "Jurassic Park"},
]


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/conf for the configs, tmp/data for their files; the tests run in tmp/elsewhere."""
    for name in ("conf", "data", "elsewhere"):
        (tmp_path / name).mkdir()
    (tmp_path / "data" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def _ingest_config(place: Path, source: str = "../data/items.jsonl") -> Path:
    config = place / "conf" / "ingest.toml"
    config.write_text(
        f'[source]\npath = "{source}"\nid = "item_id"\ntext = "{{title}}"\n'
        '[embedder]\nspec = "hash:8"\n'
        '[store]\nuri = "faiss:../stores/items?index=Flat"\n'
        '[ingest]\nrejects = "../data/rejects.jsonl"\n'
    )
    return config


def test_ingest_takes_the_config_folder_and_flags_the_working_directory(
    place: Path, capsys: pytest.CaptureFixture
) -> None:
    config = _ingest_config(place)
    parsed = load_ingest_config(config)
    assert parsed.source.path == place / "data" / "items.jsonl"
    assert parsed.store.uri == f"faiss:{place / 'stores' / 'items'}?index=Flat"
    assert parsed.ingest.rejects == place / "data" / "rejects.jsonl"
    assert main(["ingest", str(config), "--no-progress"]) == 0
    with open_store(f"faiss:{place / 'stores' / 'items'}") as store:
        assert store.count() == 3
    # a flag's path is the working directory's, the config's other paths still its folder's
    assert main(["ingest", str(config), "--no-progress", "--store", "faiss:here"]) == 0
    with open_store(f"faiss:{place / 'elsewhere' / 'here'}") as store:
        assert store.count() == 3
    capsys.readouterr()
    assert main(["ingest", str(config), "--source", "items.jsonl", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "items.jsonl: no such file" in err and "from [source]" not in err


def test_an_embedder_model_path_is_taken_from_the_config_folder(place: Path) -> None:
    config = place / "conf" / "ingest.toml"
    for spec, expected in [
        (
            "two-tower:../models/m.pt?device=cpu",
            f"two-tower:{place / 'models' / 'm.pt'}?device=cpu",
        ),
        ("text:./minilm", f"text:{place / 'conf' / 'minilm'}"),
        ("text:all-MiniLM-L6-v2", "text:all-MiniLM-L6-v2"),  # a name, not a path
        ("two-tower:/abs/m.pt", "two-tower:/abs/m.pt"),
        ("hash:8", "hash:8"),
    ]:
        config.write_text(
            f'[source]\npath = "../data/items.jsonl"\nid = "item_id"\ntext = "{{title}}"\n'
            f'[embedder]\nspec = "{spec}"\n'
            '[store]\nuri = "faiss:../stores/items"\n'
        )
        assert load_ingest_config(config).embedder.spec == expected


def test_a_missing_source_names_the_key_and_the_config(
    place: Path, capsys: pytest.CaptureFixture
) -> None:
    config = _ingest_config(place, source="items.jsonl")  # conf/items.jsonl: not there
    assert main(["ingest", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{place / 'conf' / 'items.jsonl'}: no such file" in err
    assert f"(from [source] path in {config})" in err


def test_train_bench_and_drift_paths(place: Path) -> None:
    (place / "conf" / "train.toml").write_text(
        'model_path = "../models/m.pt"\n[data]\n'
        '[data.interactions]\npath = "../data/ratings.csv"\n'
        '[data.items]\npath = "../data/items.jsonl"\nid = "item_id"\n'
    )
    train = load_experiment_config(place / "conf" / "train.toml")
    assert train.model_path == place / "models" / "m.pt"
    assert train.data.items.path == place / "data" / "items.jsonl"
    (place / "conf" / "bench.toml").write_text(
        '[run]\nout = "../out"\ncalibrate = "calibrate.toml"\n'
        '[[datasets]]\nname = "t"\nkind = "two-tower"\nmodel = "../models/m.pt"\n'
        'data = "train.toml"\n'
        '[[datasets]]\nname = "c"\nkind = "catalog-text"\ndata = "train.toml"\n'
        'template = "{title}"\n'
        '[[stores]]\nname = "flat"\nuri = "faiss:{dir}?index=Flat"\n'
    )
    bench = load_bench_config(place / "conf" / "bench.toml")
    assert bench.run.out == place / "out"
    assert bench.run.calibrate == place / "conf" / "calibrate.toml"
    assert bench.datasets[0].model == place / "models" / "m.pt"
    assert {d.data for d in bench.datasets} == {place / "conf" / "train.toml"}
    assert bench.stores[0].uri == "faiss:{dir}?index=Flat"  # a placeholder, not a path
    (place / "conf" / "drift.toml").write_text('[drift]\ndata = "train.toml"\n')
    assert load_drift_config(place / "conf" / "drift.toml").data == place / "conf" / "train.toml"


def test_serve_opens_what_its_config_names_from_another_folder(
    place: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["ingest", str(_ingest_config(place)), "--no-progress"]) == 0
    serve = place / "conf" / "serve.toml"
    serve.write_text('[text]\nuri = "faiss:../stores/items"\n')
    rec = Recommender.from_config(serve)
    try:
        assert rec.search_text("Jurassic Park", 1).hits.ids == ["3"]
    finally:
        rec.close()

    serve.write_text('[text]\nuri = "faiss:../stores/nothing"\n')
    with pytest.raises(StoreNotFound, match=r"\(from \[text\] uri in .*serve.toml\)"):
        Recommender.from_config(serve)

    serve.write_text('[two_tower]\nuri = "faiss:../stores/items"\nmodel = "../models/m.pt"\n')
    config = load_serve_config(serve)
    assert config.two_tower.model == place / "models" / "m.pt"
    with pytest.raises(ConfigError, match=r"m.pt: no such model file \(from \[two_tower\] model"):
        Recommender.from_config(serve)

    serve.write_text(
        '[two_tower]\nuri = "faiss:../stores/items"\n'
        '[users]\nusers = "../data/users.csv"\nratings = "../data/ratings.csv"\n'
    )
    with pytest.raises(CatalogError, match=r"no such file \(from \[users\] users in "):
        Recommender.from_config(serve)
    serve.write_text('[two_tower]\nuri = "faiss:../stores/items"\n[users]\ndata = "train.toml"\n')
    with pytest.raises(ConfigFileError, match=r"no such config file \(from \[users\] data in "):
        Recommender.from_config(serve)


def test_only_filesystem_uris_are_joined() -> None:
    folder = Path("/srv/conf")
    assert located_in("faiss:../data/x?index=Flat", folder) == "faiss:/srv/data/x?index=Flat"
    assert located_in("qdrant+edge:edge/x", folder) == "qdrant+edge:/srv/conf/edge/x"
    assert located_in("qdrant+local:./q/coll", folder) == "qdrant+local:/srv/conf/q/coll"
    for kept in ("faiss:/abs/x", "faiss:~/x", "faiss:", "qdrant://host:6333/c",
                 "qdrant+memory:c", "pinecone://idx?namespace=a"):  # fmt: skip
        assert located_in(kept, folder) == kept
