"""`layerseg selftest` from a wheel runs without pyproject.toml: conftest.py alone must filter mergekit's noise."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_ini_file_still_filters_mergekit_numpy_core_warning(tmp_path):
    # -c os.devnull: no pyproject.toml, as in the wheel; the chosen test imports mergekit (which warns).
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(TESTS), "-q",
                             "-p", "no:cacheprovider", f"{TESTS / 'test_recipe_checks.py'}::"
                             "test_a_key_given_twice_is_refused"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed" in result.stdout and "numpy.core" not in result.stdout + result.stderr, result.stdout[-3000:]


def test_selftest_runs_in_parallel_unless_told_otherwise(monkeypatch):
    import os

    from layerseg_merge.cli.about import _parallel

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert _parallel(("-q", "-p", "no:cacheprovider")) == ["-n", "2", "--dist", "worksteal"]
    for chosen in (("-n", "0"), ("-n0",), ("--numprocesses=3",), ("-p", "no:xdist"), ("--dist", "load")):
        assert _parallel(chosen) == [], chosen
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert _parallel(())[:2] == ["-n", "4"]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert _parallel(()) == []
