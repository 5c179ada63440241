"""The thread policy (layerseg_merge.io.cpus): threads and DataLoader workers within the cores a process may use."""

from pathlib import Path

import pytest

from layerseg_merge.io.cpus import thread_plan, usable_cores


def test_the_affinity_mask_not_the_machine_decides():
    assert usable_cores({0, 1}, Path("/nonexistent"), "") == (2, "affinity mask of 2")
    assert usable_cores(set(range(64)), Path("/nonexistent"), "")[0] == 64


def _v1(tmp_path, quota, period=100000, path="docker/abc"):
    folder = tmp_path / "cpu,cpuacct" / path
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    return f"4:cpu,cpuacct:/{path}\n3:memory:/{path}\n"


def test_a_cgroup_v1_quota_caps_the_mask(tmp_path):
    cgroup = _v1(tmp_path, 150000)  # docker --cpus 1.5
    assert usable_cores(set(range(16)), tmp_path, cgroup) == (2, "cgroup CPU quota of 1.5 cores")
    assert usable_cores({0}, tmp_path, cgroup) == (1, "affinity mask of 1")  # the smaller of the two


def test_no_quota_and_unreadable_files_leave_the_mask(tmp_path):
    assert usable_cores({0, 1, 2, 3}, tmp_path, _v1(tmp_path, -1))[0] == 4
    assert usable_cores({0, 1, 2, 3}, tmp_path, "4:cpu,cpuacct:/gone\n")[0] == 4


def test_a_cgroup_v2_quota_and_its_parents(tmp_path):
    (tmp_path / "job" / "step").mkdir(parents=True)
    (tmp_path / "job" / "cpu.max").write_text("300000 100000\n")  # the parent allows 3 cores
    (tmp_path / "job" / "step" / "cpu.max").write_text("max 100000\n")
    assert usable_cores(set(range(8)), tmp_path, "0::/job/step\n") == (3, "cgroup CPU quota of 3 cores")


def test_threads_and_workers_together_stay_within_the_cores():
    two = (2, "affinity mask of 2")
    plan = thread_plan(environ={}, cores=two)
    assert (plan.threads, plan.workers) == (1, 1)
    assert plan.threads + plan.workers <= 2
    plan = thread_plan(workers=0, environ={}, cores=two)
    assert (plan.threads, plan.workers) == (2, 0)
    plan = thread_plan(environ={}, cores=(16, "affinity mask of 16"))
    assert (plan.threads, plan.workers) == (14, 2)
    assert thread_plan(environ={}, cores=(1, "affinity mask of 1")).threads == 1


def test_omp_num_threads_and_threads_are_honoured():
    plan = thread_plan(environ={"OMP_NUM_THREADS": "1"}, cores=(2, "affinity mask of 2"))
    assert (plan.threads, plan.workers) == (1, 1) and "OMP_NUM_THREADS" in plan.source
    plan = thread_plan(threads=4, environ={"OMP_NUM_THREADS": "1"}, cores=(2, "affinity mask of 2"))
    assert plan.threads == 4 and "--threads" in plan.source  # the option wins over the environment
    with pytest.raises(ValueError, match="OMP_NUM_THREADS='lots' is not a whole number"):
        thread_plan(environ={"OMP_NUM_THREADS": "lots"}, cores=(2, ""))
    with pytest.raises(ValueError, match="--threads 0: give at least 1"):
        thread_plan(threads=0, environ={}, cores=(2, ""))


def test_torchrun_ranks_share_the_cores():
    plan = thread_plan(environ={"LOCAL_WORLD_SIZE": "4"}, cores=(16, "affinity mask of 16"))
    assert plan.cores == 4 and (plan.threads, plan.workers) == (2, 2)
    assert "shared by 4 torchrun ranks" in plan.describe()
    plan = thread_plan(environ={"LOCAL_WORLD_SIZE": "2"}, cores=(2, "affinity mask of 2"))
    assert (plan.cores, plan.threads, plan.workers) == (1, 1, 0)


def test_commands_say_what_they_chose_and_leave_torch_as_it_was(monkeypatch):
    import os

    import torch
    from click.testing import CliRunner

    from layerseg_merge.cli import main
    from layerseg_merge.resources import DEMO_ASSETS

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    model, data = DEMO_ASSETS / "models" / "dacs", f"folder:{DEMO_ASSETS / 'target_test'}"
    seen = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append(n) or original(n))
    result = CliRunner().invoke(main, ["eval", str(model), "--data", data, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "threads: 1 torch thread + 1 DataLoader worker on 2 usable cores (affinity mask of 2)" in result.output
    assert seen[0] == 1 and torch.get_num_threads() == before
    result = CliRunner().invoke(main, ["eval", str(model), "--data", data, "--device", "cpu", "--workers", "0",
                                       "--threads", "1"])
    assert result.exit_code == 0 and "threads: 1 torch thread + 0 DataLoader workers" in result.output
    assert "--threads" in CliRunner().invoke(main, ["sweep", "--help"]).output
    assert "affinity mask" in CliRunner().invoke(main, ["recalibrate", "--help"]).output
