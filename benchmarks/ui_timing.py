"""The web app's start and interaction times over `make demo`'s data (configs/serve.toml).

    python benchmarks/ui_timing.py [configs/serve.toml] [--repeat 5]

Start: a fresh process runs the app script (Streamlit's AppTest, the same script run a
browser session triggers) until the Recommend page holds recommendations: the stores, the
model and the user data opened, the first query answered. Interactions: a change of k, a
genre chosen in the filter, another user, a new text search (over the text space and the
image one beside it), each a full rerun of the page script. Wall and
CPU seconds are both printed: on a machine shared with other work the wall time stretches
while the CPU time stays what an idle machine would take.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest

import embedrec.ui.app
from embedrec.ui.settings import CONFIG_ENV


def timed(step: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def by_key(widgets, key: str):  # type: ignore[no-untyped-def]
    return next(w for w in widgets if w.key == key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/serve.toml", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ[CONFIG_ENV] = str(args.config.resolve())
    at = AppTest.from_file(embedrec.ui.app.__file__, default_timeout=300)
    wall, cpu = timed(at.run)
    assert not at.exception and len(at.dataframe) == 2, "the Recommend page did not render"
    print(f"start (first Recommend page with results): wall {wall:.2f} s, CPU {cpu:.2f} s")
    print(f"  os.getloadavg() = {os.getloadavg()}, cores = {os.cpu_count()}")
    users = by_key(at.selectbox, "rec-user").options
    genres = by_key(at.multiselect, "rec-f-genres").options
    steps: dict[str, list[tuple[float, float]]] = {"k": [], "genre filter": [], "user": []}
    for n in range(args.repeat):
        steps["k"].append(timed(by_key(at.slider, "rec-k").set_value(5 + n).run))
        pick = [genres[n % len(genres)]]
        steps["genre filter"].append(
            timed(by_key(at.multiselect, "rec-f-genres").set_value(pick).run)
        )
        steps["user"].append(timed(by_key(at.selectbox, "rec-user").set_value(users[n + 1]).run))
        assert not at.exception and not at.error, [e.value for e in at.error]
    at.sidebar.radio[0].set_value("Search").run()
    # an untimed first search waits for the text and image models, which load in the
    # background from the start (timed on its own below)
    first = timed(by_key(at.text_input, "search-q").set_value("a first search").run)
    print(f"first search (models loaded by then): wall {first[0]:.2f} s, CPU {first[1]:.2f} s")
    steps["text search"] = []
    for n in range(args.repeat):
        query = by_key(at.text_input, "search-q").set_value(f"a story about {n + 2} friends")
        steps["text search"].append(timed(query.run))
        assert not at.exception and not at.error, [e.value for e in at.error]
    for name, runs in steps.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"interaction, {name}: median wall {wall * 1e3:.0f} ms, CPU {cpu * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
