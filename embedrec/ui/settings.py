"""What the app serves, passed from `embedrec ui` to the Streamlit script by environment.

Streamlit runs the app as a script in its own process, so the command line's choices travel
as environment variables: the serve config, an optional service URL, and the folders where
bench and leaderboard results are looked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONFIG_ENV = "EMBEDREC_UI_CONFIG"
API_ENV = "EMBEDREC_UI_API"
RESULTS_ENV = "EMBEDREC_UI_RESULTS"
API_KEY_ENV = "EMBEDREC_API_KEY"
DEFAULT_RESULTS = ("data/demo", "bench-out", "runs")
"""Where `make demo`, `embedrec bench` and `embedrec evaluate` write by default."""


@dataclass(frozen=True)
class UISettings:
    config: Path
    api: str | None = None
    results: tuple[Path, ...] = tuple(Path(p) for p in DEFAULT_RESULTS)

    @classmethod
    def from_env(cls) -> UISettings:
        config = os.environ.get(CONFIG_ENV)
        if not config:
            raise ValueError(f"no serve config: set {CONFIG_ENV} (embedrec ui CONFIG sets it)")
        results = os.environ.get(RESULTS_ENV)
        dirs = results.split(os.pathsep) if results else DEFAULT_RESULTS
        return cls(
            config=Path(config),
            api=os.environ.get(API_ENV) or None,
            results=tuple(Path(p) for p in dirs if p),
        )

    def environ(self) -> dict[str, str]:
        """These settings as the environment variables `from_env` reads."""
        env = {CONFIG_ENV: str(self.config), RESULTS_ENV: os.pathsep.join(map(str, self.results))}
        if self.api:
            env[API_ENV] = self.api
        return env
