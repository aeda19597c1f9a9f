"""The progress bar of long work: counts, rate and time left, also for a resumed run."""
import io

from hiergen.progress import Progress


def test_a_resumed_bar_counts_the_earlier_work_but_rates_only_this_run(monkeypatch):
    clock = iter([0.0, 10.0, 10.0])
    monkeypatch.setattr("hiergen.progress.time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = Progress(100, "train", unit="step", stream=out, start=40)
    bar.n += 20                      # 20 steps in 10 s
    bar.close()
    line = out.getvalue()
    assert "60/100" in line and " 2 step/s" in line and "<20s" in line
