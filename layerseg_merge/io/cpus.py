"""How many threads this process may run: the CPU cores it may use, shared with DataLoader workers and ranks.

Research machines are shared: torch's default of one intra-op thread per core of the machine
(``os.cpu_count()``), times the DataLoader workers, times the ranks of a torchrun job, oversubscribes
the cores this process is given, and spinning OpenMP threads then wait on each other (measured: a
sweep candidate 12x slower beside two other jobs on 2 cores). :func:`thread_plan` decides, once per
command, from what the process may really use:

* the CPU affinity mask (``taskset``, Slurm, ``docker --cpuset-cpus``), not the machine's core count;
* the cgroup CPU quota (``docker --cpus``, Kubernetes limits; v1 ``cpu.cfs_quota_us`` and v2 ``cpu.max``);
* under torchrun, the ranks on this machine (``LOCAL_WORLD_SIZE``) share those cores;
* ``OMP_NUM_THREADS`` or ``--threads``, where the user chose;
* DataLoader workers count against the same cores: together with the intra-op threads they stay within
  them (at least one intra-op thread).

:func:`apply` sets torch's intra-op threads and keeps OpenMP from spinning (``OMP_WAIT_POLICY=PASSIVE``
unless set; it only takes effect before torch is imported, which the commands do lazily). No torch here.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKERS = 2  # DataLoader workers decoding images, where the cores allow


@dataclass(frozen=True)
class ThreadPlan:
    """``threads`` intra-op threads and ``workers`` DataLoader workers for this process; ``cores``: what it may
    use (its share of the machine), and why (``source``)."""

    threads: int
    workers: int
    cores: int
    source: str

    def describe(self) -> str:
        return (f"{self.threads} torch thread{'s' * (self.threads != 1)} + {self.workers} DataLoader "
                f"worker{'s' * (self.workers != 1)} on {self.cores} usable core{'s' * (self.cores != 1)} "
                f"({self.source})")


def _cgroup_quota(root: Path, proc_cgroup: str) -> float | None:
    """The CPU quota (in cores) of this process's cgroup and its ancestors, v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us / cpu.cfs_period_us``; None where there is none."""
    limits = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2 unified hierarchy
            files = [("cpu.max", None)]
            base = root
        elif "cpu" in controllers.split(","):
            files = [("cpu.cfs_quota_us", "cpu.cfs_period_us")]
            base = next((root / name for name in (controllers, "cpu,cpuacct", "cpu") if (root / name).is_dir()),
                        root / controllers)
        else:
            continue
        folder = base / path.lstrip("/")
        while True:  # the effective limit is the smallest along the path to the root
            for quota_file, period_file in files:
                limit = _read_limit(folder, quota_file, period_file)
                if limit is not None:
                    limits.append(limit)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(limits) if limits else None


def _read_limit(folder: Path, quota_file: str, period_file: str | None) -> float | None:
    try:
        text = (folder / quota_file).read_text().split()
        if period_file is None:  # v2: "max 100000" or "200000 100000"
            quota, period = text[0], text[1] if len(text) > 1 else "100000"
        else:
            quota, period = text[0], (folder / period_file).read_text().split()[0]
        if quota in ("max", "-1") or int(quota) <= 0 or int(period) <= 0:
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, IndexError):
        return None


def usable_cores(affinity: set[int] | None = None, cgroup_root: Path = Path("/sys/fs/cgroup"),
                 proc_cgroup: str | None = None) -> tuple[int, str]:
    """The cores this process may use: its affinity mask, capped by a cgroup quota; and where that came from."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not Linux
            affinity = set(range(os.cpu_count() or 1))
    cores, source = max(1, len(affinity)), f"affinity mask of {len(affinity)}"
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    quota = _cgroup_quota(cgroup_root, proc_cgroup)
    if quota is not None and math.ceil(quota) < cores:
        cores, source = max(1, math.ceil(quota)), f"cgroup CPU quota of {quota:g} cores"
    return cores, source


def _positive(value: str | None, name: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number of threads; unset it or give one >= 1") from None
    if number < 1:
        raise ValueError(f"{name}={value!r}: give at least 1 thread (or unset it)")
    return number


def thread_plan(threads: int | None = None, workers: int | None = None, environ: Mapping[str, str] | None = None,
                cores: tuple[int, str] | None = None, device: str = "cpu") -> ThreadPlan:
    """Intra-op threads and DataLoader workers for one process (see the module docstring).

    ``threads``/``workers``: the user's ``--threads``/``--workers`` (None: choose); ``environ``: the environment
    (``OMP_NUM_THREADS``, ``LOCAL_WORLD_SIZE``); ``cores``: (usable cores, why) when already known;
    ``device``: on a GPU the intra-op threads matter less than decoding, so workers keep their default.
    """
    environ = os.environ if environ is None else environ
    total, source = cores if cores is not None else usable_cores()
    ranks = _positive(environ.get("LOCAL_WORLD_SIZE"), "LOCAL_WORLD_SIZE") or 1
    share = max(1, total // ranks)
    if ranks > 1:
        source += f", shared by {ranks} torchrun ranks"
    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads}: give at least 1")
    if workers is not None and workers < 0:
        raise ValueError(f"--workers {workers}: give 0 (decode in this process) or more DataLoader workers")
    chosen = threads or _positive(environ.get("OMP_NUM_THREADS"), "OMP_NUM_THREADS")
    if chosen is not None:  # the user's choice, also past the share: it is theirs to make
        source += "; --threads" if threads else "; OMP_NUM_THREADS"
        if workers is None:
            workers = min(DEFAULT_WORKERS, max(0, share - chosen)) if device == "cpu" else DEFAULT_WORKERS
        return ThreadPlan(chosen, workers, share, source)
    if workers is None:
        workers = min(DEFAULT_WORKERS, share // 2) if device == "cpu" else min(DEFAULT_WORKERS, max(share - 1, 0))
    return ThreadPlan(max(1, share - workers), workers, share, source)


def keep_openmp_from_spinning(environ: dict | None = None) -> None:
    """Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), unless the user chose; it
    takes effect only where torch is not imported yet."""
    (os.environ if environ is None else environ).setdefault("OMP_WAIT_POLICY", "PASSIVE")


def apply(plan: ThreadPlan) -> None:
    """Give torch the plan's intra-op threads (imports torch)."""
    import torch

    if torch.get_num_threads() != plan.threads:
        torch.set_num_threads(plan.threads)


@contextlib.contextmanager
def configured(threads: int | None, workers: int | None, device: str = "auto") -> Iterator[ThreadPlan]:
    """What a command does first: OpenMP told not to spin (before torch loads), the plan for ``device`` (``auto``:
    CUDA when torch sees one), torch given its threads; torch's thread count as it was afterwards (a command run
    in-process leaves it alone)."""
    keep_openmp_from_spinning()
    import torch

    before = torch.get_num_threads()
    try:
        yield _plan_for(threads, workers, device)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _plan_for(threads: int | None, workers: int | None, device: str) -> ThreadPlan:
    import torch

    if device == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError):  # a bad device name: the command names it later
            kind = "cpu"
    plan = thread_plan(threads, workers, device=kind)
    apply(plan)
    return plan
