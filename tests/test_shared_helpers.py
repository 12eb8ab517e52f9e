"""The bottom-room helpers every other room shares: settings, file hashing, L2 normalisation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from embedrec.common import settings
from embedrec.common.files import file_sha256
from embedrec.common.vectors import ZeroVectorError, l2_normalize


def test_file_sha256_reads_in_chunks_and_returns_full_hex(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * 2**20 + 17)  # spans several 1 MiB chunks
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert len(file_sha256(str(path))) == 64
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_l2_normalize_keeps_or_refuses_zero_rows() -> None:
    rows = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    kept = l2_normalize(rows, zero_rows="keep")
    assert kept.dtype == np.float32
    np.testing.assert_allclose(kept, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], rtol=1e-6)
    with pytest.raises(ZeroVectorError, match=r"record 'b': zero vector has no direction"):
        l2_normalize(rows, zero_rows="refuse", ids=["a", "b", "c"])
    with pytest.raises(ZeroVectorError, match=r"query 1: zero vector"):
        l2_normalize(rows, zero_rows="refuse")
    unit = l2_normalize(rows[[0, 2]], zero_rows="refuse")
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), [1.0, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="zero_rows must be 'keep' or 'refuse'"):
        l2_normalize(rows[:1], zero_rows="drop")  # type: ignore[arg-type]


def test_settings_read_the_environment_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(settings.FASHION_MNIST_DIR_ENV, str(tmp_path / "fm"))
    assert settings.cache_root() == tmp_path / "cache"
    assert settings.fashion_mnist_dir() == tmp_path / "fm"
    monkeypatch.setenv(settings.CACHE_ENV, "")  # empty means unset, as in a shell
    monkeypatch.delenv(settings.FASHION_MNIST_DIR_ENV)
    assert settings.cache_root() == Path.home() / ".cache" / "embedrec"
    assert settings.fashion_mnist_dir() == settings.DEBIAN_FASHION_MNIST_DIR
