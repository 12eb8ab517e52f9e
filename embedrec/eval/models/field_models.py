"""The field's own recommenders, scored in the same harness as ours: EASE (closed form),
implicit ALS (the `implicit` package), and Cornac's BPR and BiVAE, the two libraries behind
Microsoft Recommenders' BPR and BiVAE rows.

Each is a `Model` (scores for users over the catalogue) fitted on the catalogue's training
interactions only. `implicit` and `cornac` come with the optional extra `recsys` and are
imported when such a model is built, so the harness runs without them until one is asked
for, and a missing one fails before any training with a message naming the extra.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch

from embedrec.embedders.two_tower.training import deterministic
from embedrec.eval.models.baselines import Catalog, DotModel, Model
from embedrec.eval.models.params import ALSParams, BiVAEParams, CornacBPRParams, EaseParams


def require_extra(module: str, model: str) -> Any:
    """Import `module` for `model`, or fail naming the extra that provides it (a ValueError,
    as for other missing optional dependencies, so the command line prints it plainly)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(
            f"the {model!r} model needs {module.split('.')[0]!r}, from the optional extra "
            f"'recsys': pip install 'embedrec[recsys]' ({exc})"
        ) from None


class EASE(Model):
    """Embarrassingly shallow autoencoder (Steck, WWW 2019): item-item weights
    B = argmin ||X - XB||^2 + l2 ||B||^2 with diag(B) = 0, in closed form
    B = I - P diag(1 / diag(P)) with P = (X'X + l2 I)^-1; score(u) = X_u B."""

    name = "EASE"
    store_based = False

    def __init__(self, params: EaseParams) -> None:
        self.params = params

    def fit(self, catalog: Catalog) -> None:
        self.x = catalog.interactions(catalog.items)
        gram = self.x.T.astype(np.float64) @ self.x
        gram[np.diag_indices_from(gram)] += self.params.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b.astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.x[users] @ self.weights


def _csr(catalog: Catalog):
    # SciPy comes with the optional extra 'recsys' (implicit, cornac), not embedrec itself
    from scipy.sparse import csr_matrix

    return csr_matrix(catalog.interactions(catalog.items))


class ImplicitALS(DotModel):
    """Weighted matrix factorisation for implicit feedback by alternating least squares
    (Hu, Koren & Volinsky, ICDM 2008), as the `implicit` package implements it."""

    name = "ALS (implicit)"
    store_based = False

    def __init__(self, params: ALSParams) -> None:
        self.params = params
        self.lib = require_extra("implicit.cpu.als", "als")

    def fit(self, catalog: Catalog) -> None:
        # threadpoolctl comes with the optional extra 'recsys' (implicit)
        from threadpoolctl import threadpool_limits

        p = self.params
        # implicit parallelises its own solver and warns when BLAS would add threads on top
        with threadpool_limits(1, "blas"):
            model = self.lib.AlternatingLeastSquares(
                factors=p.factors,
                regularization=p.regularization,
                alpha=p.alpha,
                iterations=p.iterations,
                random_state=p.seed,
                num_threads=1,
                calculate_training_loss=False,
            )
            model.fit(_csr(catalog), show_progress=False)
        self.user_vecs = np.asarray(model.user_factors)
        self.item_vecs = np.asarray(model.item_factors)
        self._set_items(catalog)


def _cornac_train_set(cornac: Any, catalog: Catalog, seed: int):
    """The training interactions as a Cornac Dataset, plus our user and item rows of its
    indices (-1 where Cornac has no such id)."""
    train = catalog.train
    ratings = train["rating"] if "rating" in train.columns else np.ones(len(train))
    triples = zip(
        train["user_id"].astype(str),
        train["item_id"].astype(str),
        np.asarray(ratings, dtype=float),
        strict=True,
    )
    data = cornac.data.Dataset.from_uir(triples, seed=seed)
    users = catalog.users["user_id"].astype(str).map(data.uid_map).fillna(-1).astype(int)
    items = catalog.items["item_id"].astype(str).map(data.iid_map).fillna(-1).astype(int)
    return data, users.to_numpy(), items.to_numpy()


def _gather(full: np.ndarray, known: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Our catalogue's columns of Cornac's scores (one row per user asked for): users Cornac
    does not know get 0 everywhere, items it does not know get -inf (never ranked)."""
    out = np.where(known[:, None], full[:, np.maximum(cols, 0)], 0.0).astype(np.float32)
    out[:, cols < 0] = -np.inf
    return out


class CornacBPR(Model):
    """Cornac's BPR (Rendle et al., UAI 2009): SGD on one (user, positive, negative) triple
    at a time, a negative the user interacted with is skipped, an item bias, and L2 on every
    update. score(u, i) = u . i + b_i."""

    name = "BPR (Cornac, Recommenders' settings)"
    store_based = False

    def __init__(self, params: CornacBPRParams) -> None:
        self.params = params
        self.lib = require_extra("cornac", "cornac-bpr")

    def fit(self, catalog: Catalog) -> None:
        p = self.params
        data, self.rows, self.cols = _cornac_train_set(self.lib, catalog, p.seed)
        model = self.lib.models.BPR(
            k=p.k, max_iter=p.max_iter, learning_rate=p.learning_rate,
            lambda_reg=p.lambda_reg, seed=p.seed, verbose=False,
        )  # fmt: skip
        model.fit(data)
        self.u, self.v, self.b = model.u_factors, model.i_factors, model.i_biases

    def scores(self, users: np.ndarray) -> np.ndarray:
        rows = self.rows[users]
        full = self.u[np.maximum(rows, 0)] @ self.v.T + self.b[None, :]
        return _gather(full, rows >= 0, self.cols)


class CornacBiVAE(Model):
    """Cornac's bilateral variational autoencoder (Truong, Salah & Lauw, WSDM 2021) on
    binarised interactions. Scores are the decoder's logits theta_u . beta_i at the posterior
    means: Cornac ranks by their sigmoid, the same order without float32 saturation ties."""

    name = "BiVAE (Cornac, Recommenders' settings)"
    store_based = False

    def __init__(self, params: BiVAEParams) -> None:
        self.params = params
        self.lib = require_extra("cornac", "cornac-bivae")

    def fit(self, catalog: Catalog) -> None:
        p = self.params
        data, self.rows, self.cols = _cornac_train_set(self.lib, catalog, p.seed)
        self.model = self.lib.models.BiVAECF(
            **p.model_dump(), use_gpu=torch.cuda.is_available(), verbose=False
        )
        # one torch thread, as the two-tower trains: on a busy machine more threads spin-wait
        with deterministic(p.seed, threads=1):
            self.model.fit(data)

    def scores(self, users: np.ndarray) -> np.ndarray:
        rows = self.rows[users]
        bivae = self.model.bivae
        with torch.no_grad():
            theta = bivae.mu_theta[torch.from_numpy(np.maximum(rows, 0))]
            full = (theta @ bivae.mu_beta.T).cpu().numpy()
        return _gather(full, rows >= 0, self.cols)
