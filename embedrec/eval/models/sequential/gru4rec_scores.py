"""Cornac's GRU4Rec scores for many users at once.

Cornac's `GRU4Rec.score` runs one user's history through the network one item at a time and
multiplies the whole catalogue at every step (`GRU4RecModel.forward`), then keeps the last
step's scores: 943 users of about 100 items each cost most of a tuning trial. Here the
histories run side by side, longest first, so step t updates the hidden state of the users
whose history has a t-th item (a leading block of rows), with the same embedding and GRU
cells as `forward`; the catalogue is multiplied once, from each user's last hidden state.
The result is what `GRU4Rec.score` returns, user by user (tests/eval/models/test_sequential.py
compares them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def gru4rec_scores(recommender: Any, histories: list[list[int]]) -> np.ndarray:
    """One row per history, over Cornac's `total_items` items: GRU4Rec's scores after the
    history's last item; an empty history gets ones everywhere, as Cornac gives it."""
    net = recommender.model
    out = np.ones((len(histories), recommender.total_items), dtype=np.float32)
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    users = order[lengths[order] > 0]
    if len(users) == 0:
        return out
    longest = int(lengths[users[0]])
    items = np.full((len(users), longest), -1, dtype=np.int64)
    for row, user in enumerate(users):
        items[row, : lengths[user]] = histories[user]
    steps = torch.from_numpy(items).to(recommender.device)
    active = (lengths[users][None, :] > np.arange(longest)[:, None]).sum(axis=1)
    net.eval()
    with torch.no_grad():
        device = recommender.device
        hidden = [torch.zeros((len(users), width), device=device) for width in net.layers]
        for t in range(longest):
            n = int(active[t])
            state = [h[:n] for h in hidden]
            embedded, weights, bias = net.embed(steps[:n, t], state, None)
            if not (net.constrained_embedding or net.embedding):
                state[0] = embedded
            net.hidden_step(embedded, state, training=False)
            for h, new in zip(hidden, state, strict=True):
                h[:n] = new
        scores = net.score_items(hidden[-1], weights, bias)
    out[users] = scores[:, : recommender.total_items].cpu().numpy()
    return out
