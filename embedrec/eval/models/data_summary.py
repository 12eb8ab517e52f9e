"""What a dataset holds, said before `embedrec train` and `evaluate` work on it: users, items,
interactions, the catalog items no one interacted with (their two-tower vectors come from
their features alone), and how many users each split tests. Printed for people and written
to the run folder (`data_summary.json`), so that a surprise in the data is seen first."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from embedrec.data.dataset import Dataset
from embedrec.eval.models.config import TIME_SPLITS, ExperimentConfig
from embedrec.ranking.splits import make_split

FILE = "data_summary.json"
SHOWN = 5
"""How many ids of items without interactions the printed summary names."""


@dataclass
class DataSummary:
    dataset: str
    users: int
    items: int
    interactions: int
    items_without_interactions: list[str]
    """Catalog items that no interaction names: scored from their features only."""
    test_users: dict[str, int | str]
    """Per split of `[eval] splits`: users with a test interaction (or why it cannot run)."""

    def lines(self) -> list[str]:
        cold = self.items_without_interactions
        named = ", ".join(cold[:SHOWN]) + (", ..." if len(cold) > SHOWN else "")
        out = [
            f"data {self.dataset}: {self.users:,} users, {self.items:,} items, "
            f"{self.interactions:,} interactions",
            f"items with no interactions: {len(cold):,}" + (f" ({named})" if cold else ""),
        ]
        out += [f"split {name}: {users} test users" for name, users in self.test_users.items()]
        if cold:
            out.append(
                f"  (all listed in {FILE}; they get feature-only vectors; leave them out of "
                "recommendations with `exclude_without_interactions = true` under [users] "
                "of a serve config)"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / FILE
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path


def summarize(data: Dataset, config: ExperimentConfig) -> DataSummary:
    """`data` as the harness reads it (`ratings`: the interactions, as in `leaderboard`)."""
    item_id = "item_id"
    ratings = data.ratings
    interacted = set(ratings[item_id].astype(str))
    catalog = data.items[item_id].astype(str).tolist()
    test_users: dict[str, int | str] = {}
    for name in config.eval.splits:
        if name in TIME_SPLITS and "timestamp" not in ratings.columns:
            test_users[name] = "needs [data.interactions] timestamp"
            continue
        _, test = make_split(name, ratings, ratio=config.eval.ratio, seed=config.eval.seed)
        test_users[name] = int(test["user_id"].nunique())
    return DataSummary(
        dataset=config.data.name,
        users=int(ratings["user_id"].nunique()),
        items=len(catalog),
        interactions=len(ratings),
        items_without_interactions=sorted(set(catalog) - interacted),
        test_users=test_users,
    )
