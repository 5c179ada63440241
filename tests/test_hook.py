"""The start-up hook, from a regular (non-editable) wheel install in a fresh virtual environment."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from helpers import write_recipe
from test_merge import MERGEKIT_YAML

REPO = Path(__file__).resolve().parents[1]


def test_wheel_install_registers_with_the_unmodified_mergekit_yaml(tmp_path, segformers):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("layerseg_merge-*.whl")
    assert {"layerseg_merge_hook.pth", "_layerseg_merge_hook.py"} <= set(zipfile.ZipFile(wheel).namelist())

    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    str(wheel)], check=True, capture_output=True)
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # Dependencies (torch, mergekit, ...) come from this environment, as plain path entries:
    # its own .pth files (an editable install of this repo, say) are not processed.
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = subprocess.check_output(
        [str(python), "-c", "import sys, mergekit; print(sys.modules['layerseg_merge'].__file__)"],
        text=True, cwd=tmp_path)
    assert where.startswith(str(site))  # registered by the hook, from the wheel's copy

    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    result = subprocess.run([str(python), MERGEKIT_YAML, str(recipe), str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "model.safetensors").exists()

    quiet = subprocess.run([str(python), "-c", "import sys; print('layerseg_merge' in sys.modules, "
                            "'mergekit' in sys.modules)"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert quiet.stdout.strip() == "False False"  # nothing is imported until mergekit is
