"""Writers that take turns. A FAISS directory takes one writer at a time (its `LOCK`, from a
handle's first write until it gives the lock up), and a handle may write only over the
generation it loaded; several processes that write one store (the event consumers of each
worker, a rebuild carrying their events) therefore write in short turns, each waiting for
the one in the way. Other stores take writers side by side and never wait here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from embedrec.stores.errors import StoreLocked

T = TypeVar("T")
WAIT_S = 30.0
"""The longest a writer waits for its turn before `StoreLocked` stands."""


def in_turn(write: Callable[[], T], *, wait_s: float = WAIT_S) -> T:
    """`write()`, tried again while another writer holds the store (`StoreLocked` at its
    first write, before it changed anything), for up to `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    pause = 0.002
    while True:
        try:
            return write()
        except StoreLocked:
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(0.05, pause * 2)
