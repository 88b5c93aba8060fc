"""One GPU per worker on a multi-GPU node (bigfive.utils.gpus), tested by its logic on CPU: which
CUDA_VISIBLE_DEVICES each worker process ends up with, with real processes and real flock claims."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from conftest import HANG_S, ROOT

from bigfive.utils.gpus import slot_order, visible_devices

# A worker as `bigfive tune` starts one: pin, print the device, then hold the claim until stdin closes.
_WORKER = """
import sys
from pathlib import Path
from bigfive.utils.gpus import pin_gpu
print(pin_gpu(sys.argv[2], directory=Path(sys.argv[1])), flush=True)
sys.stdin.read()
"""


def test_slots_go_round_robin_over_the_visible_devices():
    assert slot_order(["0", "1", "3"], 2) == [("0", 0), ("1", 0), ("3", 0), ("0", 1), ("1", 1), ("3", 1)]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2, 5"}) == ["2", "5"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []


def _start(locks: Path, visible: str, device: str = "auto") -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(locks), device], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=HANG_S)


def test_workers_started_one_after_another_take_one_gpu_each_and_a_dead_workers_gpu_is_reused(tmp_path):
    workers = []
    try:
        for _ in range(5):
            workers.append(_start(tmp_path, "0,1,3"))
        assert [dev for _, dev in workers] == ["0", "1", "3", "0", "1"]
        # the worker on GPU 3 exits (or crashes: the kernel drops its lock either way); the next one gets GPU 3
        proc3 = workers.pop(2)[0]
        proc3.kill()
        proc3.wait(timeout=HANG_S)
        workers.append(_start(tmp_path, "0,1,3"))
        assert workers[-1][1] == "3"
    finally:
        for proc, _ in workers:
            _stop(proc)


def test_one_visible_gpu_or_none_changes_nothing(tmp_path):
    for visible in ("7", ""):
        proc, dev = _start(tmp_path, visible)
        _stop(proc)
        assert dev == "None"


def _device(ctx, item) -> tuple[int, str]:
    import time

    time.sleep(0.5)  # let both workers take items
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_ablate_jobs_workers_are_pinned_at_start(tmp_path, monkeypatch):
    """`ablate --all --jobs 2` starts its workers with parallel._context: each gets its own GPU."""
    from bigfive.ablation.parallel import _context
    from bigfive.preprocess.pool import run_pool

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the workers' lock folder (tempfile.gettempdir() in each)
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    got = list(run_pool(_device, list(range(6)), workers=2, desc="test", init=_context,
                        init_args=(str(params), False, logging.INFO)))
    by_worker = dict(got)
    assert set(by_worker.values()) <= {"0", "1"}
    assert len(set(by_worker.values())) == len(by_worker), f"two workers share a GPU: {by_worker}"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1", "the parent keeps every device"


def test_a_run_configured_for_one_named_gpu_is_not_pinned(tmp_path):
    """train.device: cuda:1 names a GPU by its index among the visible ones: narrowing them would lose it."""
    workers = []
    try:
        workers.append(_start(tmp_path, "0,1", device="cuda:1"))
        workers.append(_start(tmp_path, "0,1", device="cuda"))
        assert [dev for _, dev in workers] == ["None", "0"]
    finally:
        for proc, _ in workers:
            _stop(proc)
