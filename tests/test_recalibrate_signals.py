"""`layerseg merge --recalibrate` killed or interrupted while its DataLoader workers run (real processes)."""

import os
import re
import signal
import subprocess
import sys
import time

from click.testing import CliRunner
from eval_data import semantic_folder
from helpers import write_recipe

from layerseg_merge.cli import main

# `layerseg merge`, whose DataLoader workers announce themselves (a file named by their pid) and then take
# WORKER_START_S seconds to start: the moment at which a kill or a Ctrl-C finds them, held open.
SLOW_WORKERS = """
import os, sys, time
import torch.utils.data._utils.worker as worker
original = worker._worker_loop
def starting(*args, **kwargs):
    open(os.path.join(os.environ["WORKERS"], str(os.getpid())), "w").close()
    time.sleep(float(os.environ["WORKER_START_S"]))
    return original(*args, **kwargs)
worker._worker_loop = starting
from layerseg_merge.cli import main
sys.argv = ["layerseg", "merge", *sys.argv[1:]]
main()
"""
PROGRESS = re.compile(r".*\d+%\|.*\|")  # a tqdm bar


def start_recalibrating_merge(tmp_path, segformers, worker_start_s: float) -> tuple[subprocess.Popen, list[int]]:
    """A merge recalibrating on 4 images with the DataLoader workers the thread policy gives it (one at least; in a
    session of its own, as in a terminal); returns once they all started."""
    from layerseg_merge.io.cpus import thread_plan

    expected = max(1, thread_plan(device="cpu").workers)
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    data = semantic_folder(tmp_path / "data", count=4)
    workers = tmp_path / "workers"
    workers.mkdir()
    process = subprocess.Popen([sys.executable, "-c", SLOW_WORKERS, str(recipe), str(tmp_path / "out"),
                                "--recalibrate", f"folder:{data}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True,
                               env=dict(os.environ, WORKERS=str(workers), WORKER_START_S=str(worker_start_s)))
    deadline = time.monotonic() + 120
    while len(os.listdir(workers)) < expected:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return process, [int(name) for name in os.listdir(workers)]


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_merge_killed_while_recalibrating_leaves_the_output_free(tmp_path, segformers):
    process, workers = start_recalibrating_merge(tmp_path, segformers, worker_start_s=60)
    try:
        process.kill()
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped (as until its parent reaps it)
        result = CliRunner().invoke(main, ["merge", str(tmp_path / "r.yaml"), str(tmp_path / "out")])
        assert all(running(pid) for pid in workers)  # its orphaned workers still run, and hold no lock:
        assert result.exit_code == 0, result.output
        assert "left behind by an interrupted run" in result.output and "removed the lock" not in result.output
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        process.communicate(timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out", "r.yaml", "workers"]


def test_ctrl_c_while_recalibrating_prints_one_line(tmp_path, segformers):
    process, _ = start_recalibrating_merge(tmp_path, segformers, worker_start_s=1.0)
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground process group
    _, stderr = process.communicate(timeout=60)
    lines = [line for line in stderr.replace("\r", "\n").splitlines()
             if line.strip() and not PROGRESS.match(line) and not line.startswith("threads: ")]  # the thread plan
    assert process.returncode == 130 and lines == ["merge interrupted; nothing was written"], stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "r.yaml", "workers"]
