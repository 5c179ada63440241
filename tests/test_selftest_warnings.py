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
