"""A regular (non-editable) wheel in a fresh virtual environment: package data, the start-up hook, the demo."""

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, needs_clone, write_recipe
from test_merge import MERGEKIT_YAML

pytestmark = needs_clone


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(REPO)], check=True, capture_output=True)
    (built,) = dist.glob("layerseg_merge-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """A fresh venv holding only the wheel; dependencies come from this environment as plain path entries."""
    env_dir = tmp_path_factory.mktemp("env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # This environment's own .pth files (an editable install of this repo, say) are not processed.
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site


def test_wheel_ships_recipes_demo_assets_tests_and_the_hook(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"layerseg_merge_hook.pth", "_layerseg_merge_hook.py",
            "layerseg_merge/plugin_configs/layerwise_seg_template.yaml",
            "layerseg_merge/assets/miniature_uda/models/dacs/model.safetensors",
            "layerseg_merge/assets/miniature_uda/target_test/panoptic.json",
            "layerseg_merge/tests/conftest.py"} <= names
    assert not any("__pycache__" in name for name in names)


def test_wheel_install_registers_with_the_unmodified_mergekit_yaml(venv, tmp_path, segformers):
    python, site = venv
    # stock mergekit: the start-up hook registers us when mergekit is imported; a mergekit with the upstream
    # series: its `mergekit.plugins` entry point does, on the first registry look-up
    where = subprocess.check_output(
        [str(python), "-c", "import sys, mergekit.merge_methods.registry as r; r.get('layerwise_seg'); "
         "print(sys.modules['layerseg_merge'].__file__)"], text=True, cwd=tmp_path)
    assert where.startswith(str(site))  # registered from the wheel's copy
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    result = subprocess.run([str(python), MERGEKIT_YAML, str(recipe), str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "model.safetensors").exists()
    quiet = subprocess.run([str(python), "-c", "import sys; print('layerseg_merge' in sys.modules, "
                            "'mergekit' in sys.modules)"], capture_output=True, text=True, cwd=tmp_path)
    assert quiet.stdout.strip() == "False False"  # nothing is imported until mergekit is


def test_demo_runs_from_an_empty_directory(venv, tmp_path):
    python, site = venv
    empty = tmp_path / "empty"
    empty.mkdir()
    layerseg = python.parent / "layerseg"
    result = subprocess.run([str(layerseg), "demo", "--out", "out", "--limit", "4"], capture_output=True,
                            text=True, cwd=empty)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((empty / "out" / "results.json").read_text())
    assert len(rows) == 12 and all(0 <= row["mIoU"] <= 1 for row in rows)
    listing = subprocess.run([str(layerseg), "recipes"], capture_output=True, text=True, cwd=empty)
    assert "miniature_different_heads" in listing.stdout and "layerwise_seg_template" in listing.stdout
    collected = subprocess.run([str(layerseg), "selftest", "--collect-only", "-q"], capture_output=True, text=True,
                               cwd=empty)
    assert collected.returncode == 0, collected.stdout[-3000:]
    assert f"{site}/layerseg_merge/tests/test_merge.py" in collected.stdout or "test_merge.py" in collected.stdout
