"""Hyperparameters of the field's models (`[baselines.*]` tables of an experiment config)
and the record `embedrec tune` leaves in the config it writes (`[tuned]`).

Plain pydantic models with no heavy imports, so the config can hold them without loading
the libraries they configure.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from embedrec.eval.models.next_item_params import (
    BERT4RecParams,
    FPMCParams,
    GRU4RecParams,
    RecentPopularityParams,
    SASRecParams,
    SPopParams,
    TransitionsParams,
)

RECOMMENDERS_PARAMS = (
    "Microsoft Recommenders, examples/06_benchmarks/movielens.ipynb (bpr_params, "
    "bivae_params; the notebook that drives benchmark_utils.py and produced the README "
    "table), https://github.com/recommenders-team/recommenders at commit "
    "b02c95e2b98b961f9943ce561bbb03f8dff2f41f; SEED = 42 (recommenders/utils/constants.py)"
)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EaseParams(_Params):
    l2: float = Field(500.0, gt=0)
    """Ridge weight lambda on the item-item weights (Steck, WWW 2019)."""


class ALSParams(_Params):
    factors: int = Field(64, ge=1)
    """Size of the user and item factor vectors."""
    regularization: float = Field(0.05, ge=0)
    """L2 weight on the factors in each least-squares step."""
    alpha: float = Field(2.0, gt=0)
    """Confidence of an observed interaction: 1 + alpha (Hu, Koren & Volinsky, ICDM 2008)."""
    iterations: int = Field(15, ge=1)
    """Alternating passes (users, then items)."""
    seed: int = 42
    """Seed of the factors' initialisation (implicit's random_state)."""


class CornacBPRParams(_Params):
    """Defaults: Recommenders' `bpr_params` (see RECOMMENDERS_PARAMS)."""

    k: int = Field(200, ge=1)
    """Size of the user and item factor vectors."""
    max_iter: int = Field(200, ge=1)
    """Passes over the training interactions (SGD over sampled triples)."""
    learning_rate: float = Field(0.01, gt=0)
    """SGD step size."""
    lambda_reg: float = Field(1e-3, ge=0)
    """L2 weight on the factors and item biases in each update."""
    seed: int = 42
    """Seed of initialisation and triple sampling."""


class BiVAEParams(_Params):
    """Defaults: Recommenders' `bivae_params` (see RECOMMENDERS_PARAMS), whose `use_gpu` is
    True; here a GPU is used when torch sees one."""

    k: int = Field(100, ge=1)
    """Size of the latent user and item vectors."""
    encoder_structure: list[int] = [200]
    """Widths of the hidden layers of each encoder (users and items)."""
    act_fn: Literal["tanh", "sigmoid", "relu", "relu6", "elu"] = "tanh"
    """Activation of the encoders' hidden layers."""
    likelihood: Literal["pois", "bern", "gaus"] = "pois"
    """Likelihood of the observed interactions: Poisson, Bernoulli or Gaussian."""
    n_epochs: int = Field(500, ge=1)
    """Training passes over the interactions."""
    batch_size: int = Field(1024, ge=1)
    """Users (or items) a training step."""
    learning_rate: float = Field(1e-3, gt=0)
    """Adam's learning rate."""
    seed: int = 42
    """Seed of initialisation and batching."""


class BaselineParams(_Params):
    """`[baselines.ease]`, `[baselines.als]`, `[baselines.cornac_bpr]`, `[baselines.bivae]`,
    and the next-item models' tables (eval/models/next_item_params.py)."""

    ease: EaseParams = EaseParams()
    als: ALSParams = ALSParams()
    cornac_bpr: CornacBPRParams = CornacBPRParams()
    bivae: BiVAEParams = BiVAEParams()
    recent_popularity: RecentPopularityParams = RecentPopularityParams()
    transitions: TransitionsParams = TransitionsParams()
    sasrec: SASRecParams = SASRecParams()
    bert4rec: BERT4RecParams = BERT4RecParams()
    gru4rec: GRU4RecParams = GRU4RecParams()
    fpmc: FPMCParams = FPMCParams()
    spop: SPopParams = SPopParams()


class SplitTuning(_Params):
    """What `embedrec tune` chose for one split, on that split's own validation."""

    on: str
    """The data the objective saw: the validation carved from this split's training part
    by the same protocol (ranking.splits.validation_split)."""
    best: dict[str, float]
    """Model key -> its best validation score."""
    trials_by_model: dict[str, int] = {}
    """Model key -> its trials, over this run and earlier ones on the config it started
    from (a tuned config tuned again, e.g. one model at a time)."""
    values: dict[str, Any] = {}
    """The chosen values, as a patch of the config's tables (`two_tower`, `baselines.als`,
    ...): the models on this split run with them, laid over the config."""


class TuningRecord(_Params):
    """What `embedrec tune` did to produce the config that holds this `[tuned]` table."""

    config: str
    """The config that was tuned (as given on the command line)."""
    metric: str
    """The validation metric the trials maximised (as the leaderboard names it, e.g.
    "ndcg@10")."""
    trials: int = Field(ge=1)
    """Trials per model in the last `tune` run."""
    sampler: str
    """How the trials' values were drawn (e.g. Optuna TPE and its seed)."""
    splits: dict[str, SplitTuning]
    """Split name -> what was chosen for it on its own validation."""
