"""The sequence tower's time-aware popularity prior (`popularity_days`): each item's score
gains w * log(1 + its interactions in the trailing window before "now"), w learned per
staleness bucket (`SequenceTower.popularity`), so what is popular at the query's time, not
one static prior, lifts an item, and a stale or new user can lean on it more.

"Now" is as the staleness input defines it: each training target's own time, the training
part's last interaction for a trained model (evaluate, tune, early stopping), the snapshot
for serving.

Counts, one rule for every query: time is cut into bins of `popularity_days / BINS`, counted
back from the last training interaction `end` (bin b holds the times t with
ceil((end - t) / width) = b; bin 0 only `end` itself). A query at time t (in bin b) counts the
item's interactions in bins b+1 .. b+BINS: all strictly before t (so a training target never
counts itself or anything after it) and at most one bin older than the window. The counts are
read by binary search in the sorted (item, bin) keys of the training interactions: memory is
one int64 per interaction whatever the catalogue and time span, no (time x item) table.

Serving: the item vectors carry one more coordinate, the item's log count as of `end`
(`snapshot`, stored with the model), and the user vectors the matching weight, so the dot
product of served vectors is the model's score. The served popularity is that snapshot: it
does not move with later events until the model is retrained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BINS = 8
"""Bins per trailing window: the counts lag "now" by at most popularity_days / BINS."""


@dataclass(frozen=True)
class TrailingCounts:
    """Sorted keys item * stride + bin of the training interactions (items: vocabulary
    indices), the last training time `end` and the bin width in seconds."""

    keys: torch.Tensor
    stride: int
    end: float
    width: float

    @classmethod
    def of(cls, items: np.ndarray, times: np.ndarray, days: float) -> TrailingCounts:
        known = np.isfinite(times)
        if not known.any():
            raise ValueError("popularity_days needs interaction timestamps; the log has none")
        end, width = float(times[known].max()), days * 86400.0 / BINS
        back = np.ceil((end - times[known]) / width).astype(np.int64)
        stride = int(back.max()) + BINS + 2
        keys = np.sort(items[known].astype(np.int64) * stride + back)
        return cls(torch.from_numpy(keys), stride, end, width)

    def bins(self, times: np.ndarray) -> np.ndarray:
        """The bin of each time (epoch seconds); -1 where unknown (NaN): no counts."""
        times = np.asarray(times, dtype=np.float64)
        ok = np.isfinite(times)
        back = np.ceil((self.end - np.where(ok, times, self.end)) / self.width)
        return np.where(ok, np.clip(back, 0, self.stride - BINS - 2), -1).astype(np.int64)

    def log_counts(self, items: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        """log(1 + count) of each item (vocabulary index; 0: unknown, no counts) queried in
        its bin (from `bins`; broadcast against `items`)."""
        items, bins = torch.broadcast_tensors(items.cpu(), bins.cpu())
        base = items * self.stride + bins
        hi = torch.searchsorted(self.keys, base + BINS, right=True)
        lo = torch.searchsorted(self.keys, base, right=True)
        counts = torch.where((bins >= 0) & (items > 0), hi - lo, 0)
        return torch.log1p(counts.float())

    def snapshot(self, n_items: int) -> torch.Tensor:
        """log(1 + count) of every vocabulary index (0: unknown) as of `end`: what serving
        reads."""
        return self.log_counts(torch.arange(n_items + 1), torch.zeros((), dtype=torch.int64))
