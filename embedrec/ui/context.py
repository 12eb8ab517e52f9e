"""Everything the query pages share, built once per settings and kept for the process.

Opening the stores and loading the embedders and the model takes seconds; Streamlit reruns
the page script on every interaction, so the app keeps one `Context` per settings in
Streamlit's resource cache (see app.py) and this module stays free of Streamlit.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from embedrec.retrieval.client import Recommender
from embedrec.retrieval.config import ServeConfig, SpaceConfig, load_serve_config
from embedrec.retrieval.live.service import Live
from embedrec.stores import StoreError, open_existing
from embedrec.ui.backend import Backend, InProcess, Service
from embedrec.ui.catalog import DisplayCatalog, load_catalog
from embedrec.ui.settings import API_KEY_ENV, UISettings
from embedrec.ui.users import FeatureInput, UserData, user_feature_inputs

log = logging.getLogger(__name__)


@dataclass
class Context:
    settings: UISettings
    config: ServeConfig
    backend: Backend
    catalogs: dict[str, DisplayCatalog]
    users: UserData | None = None
    feature_inputs: list[FeatureInput] = field(default_factory=list)

    @property
    def spaces(self) -> list[str]:
        return [s for s in self.backend.spaces if s in self.catalogs]


def space_configs(config: ServeConfig) -> dict[str, SpaceConfig]:
    found = {"text": config.text, "image": config.image, "two-tower": config.two_tower}
    return {name: cfg for name, cfg in found.items() if cfg is not None}


def _catalog(space: str, cfg: SpaceConfig, known_ids: list[str]) -> DisplayCatalog:
    """The space's catalog, read through its own handle on the primary (else the replica)
    store: readers share a store with the process serving it."""
    errors = []
    for uri in (cfg.uri, cfg.replica):
        if uri is None:
            continue
        try:
            store = open_existing(uri)
        except StoreError as exc:
            errors.append(str(exc))
            continue
        try:
            return load_catalog(space, store, known_ids)
        except StoreError as exc:
            errors.append(str(exc))
        finally:
            store.close()
    log.warning("no catalog for the %s space: %s", space, "; ".join(errors))
    return DisplayCatalog(space, [], {})


def _warm(recommender: Any) -> None:
    """Load the embedders' weights; a failure here is logged, and the first query that needs
    them fails again with its message on the page."""
    try:
        recommender.warmup()
    except Exception as exc:
        log.warning("loading the embedders failed: %s: %s", type(exc).__name__, exc)


def build_context(settings: UISettings) -> Context:
    """Open what the serve config names; raises `StoreError`/`ValueError` naming what failed."""
    config = load_serve_config(settings.config)
    if settings.api:
        spaces = list(space_configs(config))
        similar = config.server.similar_space or next(
            s for s in ("two-tower", "text", "image") if s in spaces
        )
        backend: Backend = Service(settings.api, spaces, similar, os.environ.get(API_KEY_ENV))
    else:
        recommender = Recommender.from_config(config)
        # the text and image models load on first use; do that while the first page renders
        threading.Thread(target=_warm, args=(recommender,), daemon=True).start()
        if config.stream is not None and config.stream.redis is not None:
            Live(recommender, config.stream, consume=False)  # users' live histories, read only
        backend = InProcess(recommender)
    users = UserData.from_config(config.users) if config.users is not None else None
    known = users.ratings["item_id"].value_counts().index.tolist() if users is not None else []
    # rated items stand in for the ids of a store no manifest describes; a store holding
    # other items (images) keeps none of them
    catalogs = {space: _catalog(space, cfg, known) for space, cfg in space_configs(config).items()}
    inputs = []
    if users is not None and config.two_tower is not None:
        inputs = user_feature_inputs(users.users, config.two_tower.model)
    return Context(settings, config, backend, catalogs, users, inputs)
