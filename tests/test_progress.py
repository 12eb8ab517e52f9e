import io
from types import SimpleNamespace

from embedrec.common.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_periodic_one_line_records() -> None:
    out = io.StringIO()
    with Progress(4, "two-tower", "epochs", stream=out, every_s=0.0) as bar:
        bar.update(1, loss=0.51234)
        bar.update(3, loss=0.25)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # one per update; close adds none when nothing is new
    assert lines[0].startswith("two-tower: 1/4 epochs, ") and "eta " in lines[0]
    assert lines[0].endswith("loss=0.5123")
    assert lines[1].startswith("two-tower: 4/4 epochs, ") and "elapsed " in lines[1]
    assert "\r" not in out.getvalue()


def test_records_are_spaced_and_the_last_one_always_shown() -> None:
    out = io.StringIO()
    with Progress(None, "rows", stream=out, every_s=3600) as bar:
        for _ in range(5):
            bar.update(10)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]
    assert out.getvalue().startswith("rows: 50 it, ")


def test_a_terminal_gets_a_bar_and_disabled_prints_nothing() -> None:
    tty = Tty()
    with Progress(2, "bar", stream=tty) as bar:
        bar.update(2)
    assert "\r" in tty.getvalue() and "2/2" in tty.getvalue()
    quiet = io.StringIO()
    with Progress(2, "off", stream=quiet, enabled=False, every_s=0.0) as bar:
        bar.update(2)
    assert quiet.getvalue() == ""


def test_rates_and_eta_read_well_at_any_speed(monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr("embedrec.common.progress.time", SimpleNamespace(monotonic=lambda: now[0]))
    fast, slow = io.StringIO(), io.StringIO()
    with Progress(1_000_000, "ingest", "rows", stream=fast, every_s=1.0) as bar:
        now[0] = 2.0
        bar.update(250_000)  # 125,000 rows/s, not 1.25e+05
    with Progress(10, "ingest", "rows", stream=slow, every_s=1.0) as bar:
        now[0] = 10.0
        bar.update(1)  # 0.125 rows/s, not 0
    assert fast.getvalue().splitlines()[0] == (
        "ingest: 250,000/1,000,000 rows, 125,000 rows/s, eta 6.0s"
    )
    assert slow.getvalue().splitlines()[0] == "ingest: 1/10 rows, 0.125 rows/s, eta 1m12s"
