"""Settings that come from the environment, read in one place at the bottom of the package.

Every room may import this module; it imports nothing from embedrec. Each setting is read
when it is asked for, not at import time, so a test or a long-running process that changes
the environment sees the change.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EMBEDREC_CACHE"
FASHION_MNIST_DIR_ENV = "EMBEDREC_FASHION_MNIST_DIR"
FASHION_MNIST_INSTALL = "sudo apt-get install dataset-fashion-mnist"
"""The command that installs Debian's copy of Fashion-MNIST into `DEBIAN_FASHION_MNIST_DIR`."""
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
REDIS_PASSWORD_ENV = "EMBEDREC_REDIS_PASSWORD"


def cache_root() -> Path:
    """`$EMBEDREC_CACHE`, default `~/.cache/embedrec`: downloads, parsed datasets, embeddings."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "embedrec")


def fashion_mnist_dir() -> Path:
    """Where a system copy of Fashion-MNIST's four .gz files is looked for first:
    `$EMBEDREC_FASHION_MNIST_DIR`, default the Debian package's folder."""
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV) or DEBIAN_FASHION_MNIST_DIR)


def redis_password() -> str | None:
    """`$EMBEDREC_REDIS_PASSWORD`: the password of the `[stream] redis` server, if it has one."""
    return os.environ.get(REDIS_PASSWORD_ENV) or None
