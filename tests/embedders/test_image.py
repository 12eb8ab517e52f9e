"""ImageEmbedder: EfficientNet-Lite0 features, every input kind, clear errors, custom modules."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embedrec.data.fashion_mnist import load_fashion_mnist
from embedrec.data.fetching import DatasetUnavailable
from embedrec.embedders import Embedder, get_embedder
from embedrec.embedders.base import InputError, resolve_device
from embedrec.embedders.image import ImageEmbedder


@pytest.fixture(scope="module")
def embedder() -> ImageEmbedder:
    return ImageEmbedder(device="cpu", image_size=64, batch_size=4)


def _picture(seed: int = 0, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((size[1], size[0], 3), np.uint8)
    x0, y0 = rng.integers(0, 15, 2)
    img[y0 : y0 + 15, x0 : x0 + 20] = rng.integers(0, 256, 3, dtype=np.uint8)
    return img


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_protocol_and_name(embedder: ImageEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.modality == "image" and embedder.dim == 1280
    assert embedder.name.startswith("image:efficientnet-lite0@") and embedder.name.endswith("64px")
    assert ImageEmbedder(image_size=64).name == embedder.name
    assert ImageEmbedder(image_size=112).name != embedder.name


def test_every_input_kind_gives_the_same_vector(embedder: ImageEmbedder, tmp_path: Path) -> None:
    pic = _picture()
    path = tmp_path / "pic.png"
    path.write_bytes(_png(pic))
    v = embedder.embed([pic, Image.fromarray(pic), str(path), path, _png(pic), _picture(1)])
    assert v.dtype == np.float32 and v.shape == (6, 1280)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    for row in v[1:5]:
        np.testing.assert_allclose(row, v[0], atol=1e-5)
    assert v[0] @ v[5] < 0.999  # a different picture is a different vector
    np.testing.assert_allclose(embedder.embed([_picture(1)])[0], v[5], atol=1e-5)  # deterministic


def test_grayscale_and_transparency(embedder: ImageEmbedder) -> None:
    gray = _picture()[:, :, 0]
    as_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.dstack([as_rgb, np.full(gray.shape, 255, np.uint8)])
    rgba[:5, :5, 3] = 0  # transparent corner -> white
    on_white = as_rgb.copy()
    on_white[:5, :5] = 255
    v = embedder.embed([gray, as_rgb, Image.fromarray(gray, "L"), Image.fromarray(rgba), on_white])
    np.testing.assert_allclose(v[1], v[0], atol=1e-5)
    np.testing.assert_allclose(v[2], v[0], atol=1e-5)
    np.testing.assert_allclose(v[3], v[4], atol=1e-5)


def test_bad_images_name_position_and_path(embedder: ImageEmbedder, tmp_path: Path) -> None:
    good = _picture()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_png(good)[:60])
    missing = tmp_path / "missing.jpg"
    cases = [
        (b"not an image at all", r"item 5: cannot decode image bytes"),
        (str(truncated), r"item 5: cannot decode image file '.*truncated\.png'"),
        (missing, r"item 5: image file '.*missing\.jpg' not found"),
        (good.astype(np.float32), r"item 5: image array must be uint8 HxW or HxWx3"),
        (np.zeros((4, 4, 2), np.uint8), r"item 5: image array must be uint8"),
        (12, r"item 5: expected an image, path or bytes, got int"),
    ]
    for bad, message in cases:  # position 5 is in the second batch of 4
        with pytest.raises(InputError, match=message) as info:
            embedder.embed([good] * 5 + [bad])
        assert info.value.index == 5


def test_custom_module_with_local_weights(tmp_path: Path) -> None:
    def tiny(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())

    weights = tmp_path / "tiny.pt"
    torch.save(tiny(0).state_dict(), weights)
    imagenet = {"pixel_mean": (123.675, 116.28, 103.53), "pixel_std": (58.395, 57.12, 57.375)}
    reference = ImageEmbedder(tiny(0), image_size=32, **imagenet)
    loaded = ImageEmbedder(tiny(1), image_size=32, weights=weights, **imagenet)
    unloaded = ImageEmbedder(tiny(1), image_size=32, **imagenet)
    assert loaded.dim == 8 and loaded.name == reference.name != unloaded.name
    assert "32px:mean=" in loaded.name
    pics = [_picture(0), _picture(1)]
    np.testing.assert_allclose(loaded.embed(pics), reference.embed(pics), atol=1e-6)
    assert not np.allclose(unloaded.embed(pics), reference.embed(pics), atol=1e-3)
    named = ImageEmbedder(tiny(0), image_size=32, name="tiny-v1", weights=weights)
    assert named.name == "image:tiny-v1:32px"


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="unknown image backbone 'resnet50'"):
        ImageEmbedder("resnet50")
    with pytest.raises(ValueError, match="needs weights=PATH"):
        ImageEmbedder("efficientnet-lite2")
    with pytest.raises(FileNotFoundError, match="weights not found"):
        ImageEmbedder(weights="/nonexistent/w.pth")


def test_factory_and_device() -> None:
    emb = get_embedder("image:efficientnet-lite0", image_size=96)
    assert isinstance(emb, ImageEmbedder) and emb.name.endswith(":96px")
    assert get_embedder("image?image_size=96&batch_size=8").name == emb.name
    assert isinstance(get_embedder("image"), ImageEmbedder)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu")


def _precision_at_10(scores: np.ndarray, labels: np.ndarray) -> float:
    np.fill_diagonal(scores, -np.inf)
    top = np.argpartition(-scores, 10, axis=1)[:, :10]
    return float((labels[top] == labels[:, None]).mean())


@pytest.mark.slow
def test_fashion_mnist_embeddings_beat_raw_pixels() -> None:
    """Same-class precision@10 on the first 1,500 test images (112 px), embeddings (cosine)
    against raw pixels (Euclidean), both measured here."""
    try:
        fm = load_fashion_mnist()
    except DatasetUnavailable as exc:
        pytest.skip(f"Fashion-MNIST unavailable: {exc}")
    n = 1500
    images, labels = fm.test_images[:n], fm.test_labels[:n]
    vectors = ImageEmbedder(image_size=112, batch_size=64).embed(list(images))
    pixels = images.reshape(n, -1).astype(np.float32)
    sq = (pixels**2).sum(1)
    pixel_p10 = _precision_at_10(-(sq[:, None] + sq[None, :] - 2 * pixels @ pixels.T), labels)
    embed_p10 = _precision_at_10(vectors @ vectors.T, labels)
    print(f"precision@10 on {n}: embeddings {embed_p10:.3f}, raw pixels {pixel_p10:.3f}")
    assert embed_p10 > pixel_p10
