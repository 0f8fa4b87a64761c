"""The quantized-model cache with real processes: two starting together, one killed mid-write,
and the progress a first use reports while it quantizes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _gguf_fixtures import write_gguf
from _hf_checkpoints import make_hf_model

from glm_agent.engine.loaders.quantized import QUANTIZED_CONFIG, load_quantized_checkpoint, quantize_cached

# A child process: load a GGUF through LocalModel with int4 (the cached path every chat, eval
# and server takes) and print what it loaded. `SLOW` stretches each quantized tensor so the
# other process surely starts while this one is writing.
CHILD = textwrap.dedent(
    """
    import json, sys, time
    import glm_agent.engine.quant as quant

    real = quant.quantize_int4
    def slow(*a, **k):
        time.sleep(float(sys.argv[2]))
        return real(*a, **k)
    quant.quantize_int4 = slow

    from glm_agent.models.local import LocalModel

    model = LocalModel(sys.argv[1], quant="int4", progress=False).load()
    print(json.dumps({"quant": model.engine.config.quant["bits"]}))
    """
)


@pytest.fixture(scope="module")
def gguf(tmp_path_factory) -> Path:
    return write_gguf(make_hf_model("qwen2", seed=3), tmp_path_factory.mktemp("src") / "tiny.gguf", "qwen2")


def _child(gguf: Path, cache: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "GLM_AGENT_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(gguf), str(delay)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_partial(cache: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((cache / "quantized").glob("*.partial")):
            return
        if proc.poll() is not None:
            pytest.fail(f"the first process ended before writing: {proc.communicate()}")
        time.sleep(0.05)
    pytest.fail("the first process never started writing its cache folder")


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def test_two_processes_quantizing_the_same_model_at_once_both_work(gguf, tmp_path):
    # 8 tensors x 1.5 s: the second process starts (a few seconds) well inside the first's write.
    first = _child(gguf, tmp_path, delay=1.5)
    _wait_for_partial(tmp_path, first)  # the first one is mid-write now
    second = _child(gguf, tmp_path, delay=1.5)
    results = [_finish(first), _finish(second)]
    for rc, out, err in results:
        assert rc == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"quant": 4}
    folders = sorted(p.name for p in (tmp_path / "quantized").iterdir() if p.is_dir())
    assert len(folders) == 1 and not folders[0].endswith(".partial"), folders  # no partial left behind
    load_quantized_checkpoint(tmp_path / "quantized" / folders[0])


def test_a_process_killed_mid_write_leaves_nothing_that_blocks_the_next(gguf, tmp_path):
    victim = _child(gguf, tmp_path, delay=5.0)
    _wait_for_partial(tmp_path, victim)
    victim.send_signal(signal.SIGKILL)  # no cleanup runs: the partial folder and the lock stay
    victim.communicate()
    assert list((tmp_path / "quantized").glob("*.partial"))
    rc, out, err = _finish(_child(gguf, tmp_path, delay=0.0))
    assert rc == 0, err[-2000:]
    assert not list((tmp_path / "quantized").glob("*.partial"))


def test_quantize_cached_reports_weighted_progress_to_the_end(gguf, tmp_path):
    seen: list[tuple[int, int]] = []
    folder = quantize_cached(gguf, tmp_path / "q", 4, 32, True, steps=lambda d, t: seen.append((d, t)))
    assert (folder / QUANTIZED_CONFIG).is_file()
    totals = {t for _, t in seen}
    assert len(totals) == 1 and seen[0][0] == 0 and seen[-1][0] == totals.pop()
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 10
    # Already there: nothing is quantized again and nothing is reported.
    seen.clear()
    assert quantize_cached(gguf, tmp_path / "q", 4, 32, True, steps=lambda d, t: seen.append((d, t))) == folder
    assert seen == []


def test_first_use_reports_preparing_through_the_progress_handler(gguf, tmp_path, monkeypatch, capfd):
    from glm_agent.core.progress import progress_handler
    from glm_agent.models.local import LocalModel

    monkeypatch.setenv("GLM_AGENT_CACHE", str(tmp_path))
    seen = []
    with progress_handler(seen.append):
        LocalModel(str(gguf), quant="int4", progress=True).load()
    preparing = [p for p in seen if p.phase == "preparing"]
    assert preparing and preparing[0].done == 0 and preparing[-1].fraction == 1.0
    assert "quantizing" not in capfd.readouterr().err  # the handler shows it; nothing is printed
    # No handler (a script, `run`, a server): plain lines on stderr instead.
    monkeypatch.setenv("GLM_AGENT_CACHE", str(tmp_path / "other"))
    LocalModel(str(gguf), quant="int4", progress=True).load()
    err = capfd.readouterr().err
    assert "quantizing tiny to int4-g128 once" in err and ": 0%" in err and ": 100%" in err


def test_a_cache_folder_without_a_checkpoint_is_replaced_and_waiters_are_told(gguf, tmp_path):
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "junk.safetensors").write_bytes(b"half")  # an older version's crash, a manual copy
    quantize_cached(gguf, folder, 4, 32)
    load_quantized_checkpoint(folder)
    assert not (folder / "junk.safetensors").exists()
    # While another process holds the lock, a newcomer says it waits, then uses that result.
    other = tmp_path / "r"
    with open(tmp_path / ".r.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        waited = []
        worker = threading.Thread(target=lambda: quantize_cached(gguf, other, 4, 32, waiting=lambda: waited.append(1)))
        worker.start()
        time.sleep(1.0)
        assert waited == [1] and worker.is_alive()  # blocked behind the lock
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    worker.join(60)
    assert not worker.is_alive() and (other / QUANTIZED_CONFIG).is_file()
