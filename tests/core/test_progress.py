"""Progress reports from a model: the ETA arithmetic, the stderr fallback, and the chat's label."""

from __future__ import annotations

import contextvars
import io
import threading

from glm_agent.core.progress import ModelProgress, duration, fraction_reporter, progress_handler, report_progress


def test_eta_follows_the_rate_so_far():
    p = ModelProgress("preparing", done=25, total=100, elapsed_s=30.0)
    assert p.fraction == 0.25 and p.eta_s == 90.0
    assert p.describe() == "25%, about 1 min 30 s left"
    assert ModelProgress("preparing", done=0, total=100, elapsed_s=5).describe() == "0%"  # no rate yet
    assert ModelProgress("preparing", done=100, total=100, elapsed_s=60).describe() == "100%"
    assert ModelProgress("preparing").describe() == "" and ModelProgress("preparing").eta_s is None
    assert [duration(s) for s in (4.4, 59, 61, 62.6, 3 * 60 + 8)] == ["4 s", "59 s", "1 min", "1 min 5 s", "3 min 10 s"]


def test_reporter_prints_each_tenth_to_stderr_when_nobody_listens():
    clock = iter(range(0, 1000, 3))
    out = io.StringIO()
    step = fraction_reporter("preparing", "quantizing m once", stream=out, clock=lambda: next(clock))
    for done in range(0, 101, 2):
        step(done, 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[0] == "quantizing m once: 0%" and lines[-1] == "quantizing m once: 100%"
    assert "about" in lines[5] and "left" in lines[5]
    silent = io.StringIO()
    fraction_reporter("preparing", None, stream=silent)(5, 10)
    assert silent.getvalue() == ""


def test_reporter_goes_to_the_handler_instead_even_from_a_worker_thread():
    seen: list[ModelProgress] = []
    out = io.StringIO()
    with progress_handler(seen.append):
        step = fraction_reporter("preparing", "label", stream=out)
        ctx = contextvars.copy_context()
        worker = threading.Thread(target=ctx.run, args=(lambda: [step(d, 4) for d in range(5)],))
        worker.start()
        worker.join()
    assert out.getvalue() == ""
    assert [(p.phase, p.done, p.total) for p in seen] == [("preparing", d, 4) for d in range(5)]
    assert report_progress("preparing") is False  # outside the block nobody listens


def test_handler_errors_never_reach_the_model():
    def broken(_):
        raise RuntimeError("display bug")

    with progress_handler(broken):
        assert report_progress("prompt", 12) is True


def test_chat_label_shows_first_use_preparation_with_eta():
    from glm_agent.cli.activity import Activity

    now = [0.0]
    activity = Activity(clock=lambda: now[0])
    activity.step_started()
    activity.on_progress(ModelProgress("loading"))
    assert activity.label() == "loading the model"
    activity.on_progress(ModelProgress("preparing", done=40, total=100, elapsed_s=20))
    line = activity.line().plain
    assert "preparing the model" in line and "40%, about 30 s left" in line
    activity.on_progress(ModelProgress("prompt", 50))
    assert activity.label().startswith("reading the prompt")
