"""Rebuild behind an alias: a new generation from the catalog, validated, then swapped in.

1. A plain store already at the alias's name is adopted as generation `g0000` (live, nothing
   lost), so that the first rebuild of an existing store can be rolled back to it.
2. Generations left by an interrupted or failed rebuild (unlisted: neither live nor previous)
   are removed, and a new one is ingested from the catalog with the embedder given. The
   embedding cache makes a rerun after a kill cheap: only rows never embedded are embedded.
   All of it, to the swap, runs under the alias's rebuild lease
   (stores/lifecycle/leases.py): while one rebuild holds it no other runs, so an unlisted
   generation is provably abandoned, and the one being built is named in the lease, which
   `drop` respects. Its name comes from the alias's counter and is never reused.
3. Where asked (`Checks.calibrate`), the generation is calibrated to a target recall
   (`embedrec calibrate`'s measurement), so that it serves with its own search defaults
   rather than none; then it is validated (validation.py: count, sampled fetches, recall
   against exact search at those defaults). A failure raises `RebuildFailed` naming each
   failed check; the alias is not touched and the generation is left for inspection until
   the next rebuild or `drop`.
4. The alias is swapped atomically; the old live generation becomes `previous`. The swap
   checks the generation's fingerprint (count and committed digest) against the one taken
   before validation, and a timed lease is checked to be still this rebuild's.
5. The catalogue events applied to the old generation since step 2's replay (the consumer
   keeps writing the live generation) are carried into the new one (live_replay.py).

Until step 4 the live generation is never written, so a rebuild killed at any point leaves
it serving exactly as before; a swap is one atomic replace of the pointer.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass, field
from typing import Any

from embedrec.embedders import Embedder, EmbeddingCache
from embedrec.ingestion.live_replay import replay
from embedrec.ingestion.manifest import IngestManifest
from embedrec.ingestion.pipeline import EmbedStage, ingest
from embedrec.ingestion.sources import Source
from embedrec.ingestion.summary import IngestOptions, IngestSummary
from embedrec.ingestion.validation import Checks, Validation, validate
from embedrec.stores import ConfigError, StoreNotFound, open_existing
from embedrec.stores.lifecycle import generations as points
from embedrec.stores.lifecycle.aliases import AliasBook, AliasState, Generation, alias_book
from embedrec.stores.lifecycle.generations import Fingerprint
from embedrec.stores.lifecycle.writers import in_turn
from embedrec.stores.recall.calibrate import (
    CalibrateSettings,
    Calibration,
    calibrate,
    save_defaults,
)

Say = Callable[[str], None]


class RebuildFailed(ValueError):
    """The new generation failed validation: no swap happened."""

    def __init__(self, message: str, result: Rebuilt) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class Rebuilt:
    """What one rebuild did."""

    alias: str
    generation: Generation
    summary: IngestSummary
    validation: Validation | None = None
    calibration: Calibration | None = None
    state: AliasState | None = None
    """The alias after the swap (None when validation failed)."""
    adopted: Generation | None = None
    removed: list[str] = field(default_factory=list)
    carried: dict[str, str] = field(default_factory=dict)
    """Catalogue events carried from the live generation (id -> op; live_replay.py)."""
    fingerprint: Fingerprint | None = None
    """The generation as validation found it: what the swap checks it installs."""

    def figures(self) -> dict[str, Any]:
        state = self.state
        return {
            "alias": self.alias,
            "generation": self.generation.name,
            "generation_uri": self.generation.uri,
            "swapped": state is not None,
            "live": state.live.name if state and state.live else None,
            "previous": [g.name for g in state.previous] if state else [],
            "adopted": self.adopted.name if self.adopted else None,
            "removed": self.removed,
            "events_carried": len(self.carried),
            **(self.validation.figures() if self.validation else {}),
            **({"calibration": self.calibration.to_json()} if self.calibration else {}),
        }

    def failures(self, checks: Checks) -> list[str]:
        out = self.validation.failures(checks) if self.validation else []
        cal = self.calibration
        if cal is not None and cal.search_params and cal.chosen is None:
            out.insert(
                0,
                f"calibration: no values of {', '.join(cal.search_params)} in the grid reach "
                f"recall@{cal.k} {cal.target:g} (confidence {cal.confidence:g})",
            )
        return out


def live_target(uri: str) -> str:
    """Where a plain (incremental) ingest into `uri` writes: the live generation of an
    alias, so that its manifest is the generation's own; `uri` itself otherwise."""
    if uri.startswith("qdrant+memory:"):
        return uri
    try:
        live = alias_book(uri).state().live
    except (StoreNotFound, ConfigError):  # nothing there yet, or no alias possible (faiss:)
        return uri  # the ingest opens it as a plain store, and says what is wrong with it
    return live.uri if live is not None else uri


def rebuild(
    source: Source,
    alias: str,
    spec: str,
    options: IngestOptions,
    *,
    embedder: Embedder,
    checks: Checks,
    progress: Callable[[int], None] | None = None,
    say: Say = lambda text: None,
    wait: bool = False,
    stage: EmbedStage | None = None,
) -> Rebuilt:
    """Build, validate and swap in a new generation of `alias` (see the module doc), under
    the alias's rebuild lease: `AliasBusy` naming a rebuild already running, unless `wait`.
    `stage` embeds elsewhere, as `ingest` takes it (`--engine ray`)."""
    book = alias_book(alias)
    with book.rebuild_lease(wait=wait, say=say) as lease:
        adopted = book.adopt()
        if adopted is not None:
            say(f"adopted the store at {alias} as generation {adopted.name} (live)")
        removed = []
        for leftover in book.state().unlisted:  # no other rebuild runs: abandoned
            say(f"removing generation {leftover.name}, left by an interrupted or failed rebuild")
            book.drop(leftover)
            removed.append(leftover.name)
        live = book.state().live
        generation = book.new_generation()
        lease.building(generation.name)
        say(f"building generation {generation.name}: {generation.uri}")
        points.reached("rebuild:started")
        result = _build(
            book,
            source,
            (alias, live),
            generation,
            spec,
            options,
            embedder,
            checks,
            progress,
            say,
            stage,
        )
        result.alias, result.adopted, result.removed = alias, adopted, removed
        failures = result.failures(checks)
        if failures:
            live = book.live_token()
            raise RebuildFailed(_failure_text(alias, generation, live, failures), result)
        points.reached("rebuild:validated")
        lease.check()
        result.state = book.swap(generation, result.fingerprint)
        points.reached("rebuild:swapped")
        # the events applied to the old generation since the first replay (live_replay.py),
        # written in turn with the consumers that may write the new generation already
        result.carried = in_turn(
            lambda: replay(alias, live, generation, source, embedder, say, late=True)
        )
    return result


def _build(
    book: AliasBook,
    source: Source,
    live: tuple[str, Generation | None],
    generation: Generation,
    spec: str,
    options: IngestOptions,
    embedder: Embedder,
    checks: Checks,
    progress: Callable[[int], None] | None,
    say: Say,
    stage: EmbedStage | None,
) -> Rebuilt:
    """Ingest, carry the catalogue events of the alias's live generation (`live`: alias and
    generation) into, calibrate and validate the new generation; its fingerprint is taken
    before the validation looks at it, for the swap to check that it installs what was
    validated."""

    def step(n: int) -> None:
        if progress is not None:
            progress(n)
        points.reached("rebuild:ingesting")

    with EmbeddingCache() as cache:
        summary = ingest(
            source, generation.uri, spec, options,
            embedder=embedder, cache=cache, progress=step, stage=stage,
        )  # fmt: skip
        result = Rebuilt("", generation, summary)
        with suppress(StoreNotFound):  # nothing written: validation says so
            result.carried = replay(*live, generation, source, embedder, say)
        if checks.calibrate is not None:
            say(f"calibrating {generation.name} to recall@{checks.calibrate.k} "
                f"{checks.calibrate.target_recall:g}")  # fmt: skip
            result.calibration = _calibrate(generation, checks.calibrate)
        points.reached("rebuild:validating")
        with suppress(StoreNotFound):  # nothing written: validation says so
            result.fingerprint = book.fingerprint(generation)
        say(f"validating {generation.name}: count, {checks.sample} fetches, recall@{checks.k}")
        result.validation = _validate(generation, source, embedder, summary, checks, cache,
                                      result.carried)  # fmt: skip
    return result


def _calibrate(generation: Generation, settings: CalibrateSettings) -> Calibration:
    """Calibrate the new generation and keep the chosen search params as its search defaults."""
    with open_existing(generation.uri) as store:
        cal = calibrate(store, settings, progress=False)
        if cal.chosen is not None:
            save_defaults(store, cal)
    return cal


def _validate(
    generation: Generation,
    source: Source,
    embedder: Embedder,
    summary: IngestSummary,
    checks: Checks,
    cache: EmbeddingCache,
    carried: dict[str, str],
) -> Validation:
    assert summary.manifest is not None
    with closing(IngestManifest(summary.manifest)) as manifest:
        try:
            store = open_existing(generation.uri)
        except StoreNotFound:
            return Validation(expected=manifest.count(), count=0)
        with store:
            return validate(store, source, embedder, manifest, checks, cache, carried)


def _failure_text(alias: str, generation: Generation, live: str | None, failures: list[str]) -> str:
    kept = f"{live} stays live" if live else "nothing is live"
    return (
        f"generation {generation.name} of {alias} failed validation, not swapped ({kept}): "
        + "; ".join(failures)
        + f". It is left for inspection at {generation.uri}; the next rebuild removes it, "
        f"as does `embedrec drop {alias} {generation.name}`"
    )
