"""`SequenceTower.last`, the inference path of the user vector, against the full pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedrec.embedders.two_tower.sequence import (
    SequenceShape,
    SequenceTower,
    encode_histories,
    gap_buckets,
    pad_left,
    staleness_buckets,
)


def shape(layers: int, time_buckets: int, prior: bool, stale: int = 0) -> SequenceShape:
    return SequenceShape(
        dim=16, hidden=8, history=12, layers=layers, heads=2, dropout=0.3,
        time_buckets=time_buckets, normalize=True, prior=prior, staleness_buckets=stale,
    )  # fmt: skip


def tower(
    layers: int, time_buckets: int, prior: bool, n_features: int, stale: int = 0
) -> SequenceTower:
    torch.manual_seed(layers * 100 + time_buckets + 10 * prior + n_features)
    t = SequenceTower(n_features, shape(layers, time_buckets, prior, stale)).eval()
    if t.staleness is not None:  # trained values, not the neutral start
        torch.nn.init.normal_(t.staleness.weight)
    return t


def inputs(rng: np.random.Generator, lengths: list[int], n: int, buckets: int):  # type: ignore[no-untyped-def]
    vecs = [rng.normal(size=(m, 16)).astype(np.float32) for m in lengths]
    times = [np.cumsum(rng.exponential(3600.0, size=m)) for m in lengths]
    return (
        torch.from_numpy(pad_left(vecs, n, (16,))),
        torch.from_numpy(pad_left([np.ones(m, dtype=bool) for m in lengths], n)),
        torch.from_numpy(pad_left([gap_buckets(t, buckets) for t in times], n)),
    )


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("time_buckets", [0, 6])
@pytest.mark.parametrize("prior", [False, True])
@pytest.mark.parametrize("n_features", [0, 3])
@pytest.mark.parametrize("stale", [0, 8])
def test_last_is_the_full_pass_at_the_last_position(layers, time_buckets, prior, n_features, stale):
    """Full, padded, one-item, over-long and empty histories, in one batch."""
    t = tower(layers, time_buckets, prior, n_features, stale)
    lengths = [12, 12, 7, 1, 30, 0]
    items, mask, gaps = inputs(np.random.default_rng(layers), lengths, 12, time_buckets)
    feats = torch.randn(len(lengths), n_features) if n_features else None
    since = torch.randint(0, 8, (len(lengths), 1)) if stale else None
    with torch.inference_mode():
        full = t(items, mask, gaps, feats, since)[:, -1]
        last = t.last(items, mask, gaps, feats, since)
    assert last.shape == (len(lengths), 16)
    torch.testing.assert_close(last, full, rtol=1e-5, atol=1e-6)


def test_encode_histories_reads_the_last_position():
    """In chunks (the last one short), an empty history among them."""
    t = tower(2, 6, True, 0)
    rng = np.random.default_rng(1)
    histories = [
        (rng.normal(size=(m, 16)).astype(np.float32), np.cumsum(rng.exponential(60.0, m)))
        for m in (12, 3, 0, 20)
    ]
    got = encode_histories(t, histories, None, shape(2, 6, True), torch.device("cpu"), chunk=3)
    items, mask, gaps = (
        torch.from_numpy(pad_left([v for v, _ in histories], 12, (16,))),
        torch.from_numpy(pad_left([np.ones(len(v), dtype=bool) for v, _ in histories], 12)),
        torch.from_numpy(pad_left([gap_buckets(s, 6) for _, s in histories], 12)),
    )
    with torch.no_grad():
        full = t(items, mask, gaps, None)[:, -1].numpy()
    np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-6)


def test_last_refuses_training_mode():
    t = tower(1, 0, False, 0).train()
    items, mask, gaps = inputs(np.random.default_rng(0), [3], 12, 0)
    with pytest.raises(AssertionError, match="inference"):
        t.last(items, mask, gaps, None)


@pytest.mark.parametrize("stale", [0, 8])
def test_encode_histories_pads_to_the_longest_history_alone(stale):
    """Every history shorter than the tower's `history` (12): the chunk is padded to its
    longest (5 items), and each vector is still the full pass's over 12 positions, gaps,
    features and staleness included."""
    t = tower(2, 6, True, 3, stale)
    rng = np.random.default_rng(7)
    lengths = [5, 2, 0, 5, 1]
    histories = [
        (rng.normal(size=(m, 16)).astype(np.float32), np.cumsum(rng.exponential(600.0, m)))
        for m in lengths
    ]
    feats = torch.randn(len(lengths), 3)
    now = np.array([h[-1] + 3600.0 if len(h) else np.nan for _, h in histories])
    got = encode_histories(
        t, histories, feats, shape(2, 6, True, stale), torch.device("cpu"), now=now
    )
    items, mask, gaps = (
        torch.from_numpy(pad_left([v for v, _ in histories], 12, (16,))),
        torch.from_numpy(pad_left([np.ones(len(v), dtype=bool) for v, _ in histories], 12)),
        torch.from_numpy(pad_left([gap_buckets(s, 6) for _, s in histories], 12)),
    )
    since = torch.from_numpy(staleness_buckets(histories, now, stale)[:, None]) if stale else None
    with torch.inference_mode():
        full = t(items, mask, gaps, feats, since)[:, -1].numpy()
    np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-6)
