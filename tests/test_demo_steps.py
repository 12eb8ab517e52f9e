"""`make demo` leaves every web page something to show (issue 28): its last step writes a
quick leaderboard, labelled as one, that the Quality page finds; each page says what it shows
and what two-tower means; the demo's tables wrap long titles rather than cut them."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from embedrec import Hits
from embedrec.demo import console, quality_step, show
from embedrec.eval.models.config import load_experiment_config
from embedrec.ui.settings import DEFAULT_RESULTS
from embedrec.ui.views import quality, recommend, search, similar, stores
from embedrec.ui.widgets import TWO_TOWER

REPO = Path(__file__).resolve().parents[1]


def test_the_quick_leaderboard_is_quick_labelled_and_found() -> None:
    step = quality_step(Path("data/demo"))
    assert step.argv[:2] == ["evaluate", "configs/demo_quality.toml"]
    config = load_experiment_config(REPO / step.argv[1])
    assert config.two_tower.epochs <= 3 and config.eval.splits == ["stratified"]
    assert config.eval.stores == [] and "two-tower" in config.eval.models
    full = load_experiment_config(REPO / "configs" / "two_tower.toml")
    assert config.data == full.data  # the same data as the full leaderboard
    assert "It is NOT the" in (REPO / step.argv[1]).read_text()
    out = Path(step.argv[step.argv.index("--out") + 1])
    assert str(out.parent) in DEFAULT_RESULTS  # where the web app looks by default
    assert "configs/two_tower.toml" in quality.ABOUT and "quality-quick" in quality.ABOUT


def test_each_page_says_what_it_shows() -> None:
    for page in (recommend, similar, search, stores, quality):
        assert page.ABOUT.strip()
    for page in (recommend, similar, stores, quality):
        assert TWO_TOWER in page.ABOUT


def test_the_demo_tables_wrap_long_titles(monkeypatch) -> None:
    narrow = Console(width=60, record=True)
    monkeypatch.setattr("embedrec.demo.console", narrow)
    title = "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb"
    show("t", Hits.of([("1", 0.5, {"title": title, "year": 1963})]), ("title", "year"))
    text = " ".join(narrow.export_text().split())
    assert "…" not in text
    for word in title.split():
        assert word.strip(".:") in text
    assert console is not narrow
