"""Batch sizes by device (embedders/batching.py): auto is the CPU size on a CPU; a batch that
runs out of CUDA memory is split and retried with the same vectors; auto's probe.

No GPU here: out-of-memory is torch's own `torch.cuda.OutOfMemoryError`, raised by a real
torch module when its batch is larger than it "fits". The probe and its cache are driven
through `BatchSizer.run` with the device named "cuda" (only a key and the switch to probing
there) and CPU callables."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from embedrec.common.vectors import l2_normalize
from embedrec.embedders import get_embedder
from embedrec.embedders.base import InputError
from embedrec.embedders.batching import BatchSizer, check_batch_size, probe_batch_size
from embedrec.embedders.image import ImageEmbedder
from embedrec.embedders.text import TextEmbedder


class Net(torch.nn.Module):
    """A small conv net that records each batch it is given and runs out of "CUDA memory"
    on a batch of more than `fits` images."""

    def __init__(self, fits: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fits = fits
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(int(x.shape[0]))
        if self.fits is not None and x.shape[0] > self.fits:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory ({x.shape[0]} images)")
        return self.conv(x)


def images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return list(rng.integers(0, 256, (n, 20, 20, 3), dtype=np.uint8))


def image_embedder(net: Net, name: str, batch_size: int | str = "auto") -> ImageEmbedder:
    return ImageEmbedder(net, device="cpu", image_size=16, batch_size=batch_size, name=name)


def test_auto_is_the_cpu_size_on_a_cpu() -> None:
    net = Net()
    embedder = image_embedder(net, "auto-cpu")
    assert embedder.batch_size == "auto"
    assert embedder.embed(images(70)).shape == (70, 8)
    assert net.seen == [32, 32, 6] and embedder.sizer.size("cpu") == 32
    text = TextEmbedder(device="cpu")
    assert text.batch_size == "auto" and text.sizer.size("cpu") == 64
    assert get_embedder("text?batch_size=auto").batch_size == "auto"
    assert get_embedder("image?batch_size=8").batch_size == 8
    for bad in (0, -1, "big", 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a number >= 1 or 'auto'"):
            check_batch_size(bad)


def test_text_on_a_cpu_gives_the_vectors_of_one_encode_call() -> None:
    """The text embedder batches as sentence-transformers does inside one `encode` call (as
    the code before auto did, then normalised again): the same vectors to the bit."""
    embedder = TextEmbedder(device="cpu")
    texts = [f"{'a long title ' * (i % 7)}film {i}" for i in range(100)]
    vectors = embedder.embed(texts)
    before = embedder._model().encode(
        texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True
    )
    np.testing.assert_array_equal(vectors, l2_normalize(before, zero_rows="keep"))


def test_out_of_memory_halves_the_batch_and_retries_it() -> None:
    reference = image_embedder(Net(), "oom-reference", batch_size=4).embed(images(40))
    net = Net(fits=5)
    embedder = image_embedder(net, "oom-halves", batch_size=16)
    vectors = embedder.embed(images(40))
    np.testing.assert_array_equal(vectors, reference)
    # 16 fails, its halves of 8 fail, their halves of 4 run; the rest goes in 4s
    assert net.seen[:7] == [16, 8, 4, 4, 8, 4, 4]
    assert embedder.sizer.size("cpu") == 4 and set(net.seen[7:]) == {4}
    net.seen.clear()
    embedder.embed(images(9))  # the lowered size stays for the process
    assert net.seen == [4, 4, 1]


def test_a_bad_item_in_a_split_batch_keeps_its_position() -> None:
    items: list = images(12)
    items[10] = b"not an image"
    with pytest.raises(InputError, match="item 10: cannot decode image bytes") as info:
        image_embedder(Net(fits=2), "oom-bad-item", batch_size=12).embed(items)
    assert info.value.index == 10


def test_one_item_that_does_not_fit_raises() -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError):
        image_embedder(Net(fits=0), "oom-one", batch_size=4).embed(images(3))


def paced(fits: int, seconds: float = 0.1):  # type: ignore[no-untyped-def]
    """A model call that takes `seconds` whatever the batch up to 128 items (a GPU that is
    not yet busy), then longer in proportion squared; more than `fits` items run out of
    memory."""
    sizes: list[int] = []

    def run(n: int) -> None:
        sizes.append(n)
        if n > fits:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory ({n} items)")
        time.sleep(seconds * max(1.0, n / 128) ** 2)

    return run, sizes


def test_probe_doubles_until_out_of_memory_or_no_gain() -> None:
    run, sizes = paced(fits=100)
    assert probe_batch_size(run, 16, 1024) == 64  # 128 runs out of memory
    assert sizes == [16, 16, 32, 64, 128]  # a warm-up, then one timed call per size
    run, sizes = paced(fits=10_000)
    assert probe_batch_size(run, 32, 4096) == 128  # 256 takes 4x as long: no gain
    run, sizes = paced(fits=10_000)
    assert probe_batch_size(run, 32, 64) == 64  # the ceiling
    run, sizes = paced(fits=20)
    assert probe_batch_size(run, 64, 4096) == 16  # the start size halved until it fits
    assert sizes == [64, 32, 16, 16]


def test_auto_on_cuda_probes_once_per_model_and_device() -> None:
    """`BatchSizer.run` as an embedder on CUDA calls it: the probe's size is used and kept
    for the process; a call with no more items than the CPU size neither probes nor
    batches differently."""
    run, sizes = paced(fits=100)
    seen: list[int] = []

    def encode(chunk: list[int]) -> np.ndarray:
        seen.append(len(chunk))
        return np.asarray(chunk, dtype=np.float32)[:, None]

    sizer = BatchSizer("auto-cuda-test", "auto", default=16, most=1024)
    items = list(range(20))
    np.testing.assert_array_equal(sizer.run("cuda", items[:16], encode, run)[:, 0], items[:16])
    assert sizes == [] and seen == [16]
    out = sizer.run("cuda", list(range(150)), encode, run)
    np.testing.assert_array_equal(out[:, 0], np.arange(150))
    assert sizer.size("cuda") == 64 and seen[1:] == [64, 64, 22]
    probed = len(sizes)
    sizer.run("cuda", list(range(150)), encode, run)
    assert len(sizes) == probed  # kept: no second probe
    assert BatchSizer("auto-cuda-test", "auto", 16, 1024).size("cuda") == 64  # per model
    assert sizer.size("cpu") == 16 and sizer.size("cuda:1") == 16  # and device


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal without CUDA")
def test_cuda_check_refuses_in_one_line_without_cuda() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "cuda_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "cuda_check: no CUDA device (torch.cuda.is_available() is False); "
        "--dry-run checks this script on the CPU"
    ]
