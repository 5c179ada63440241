"""Start-up: commands import only what they use; registration with mergekit is lazy."""

import json
import os
import subprocess
import sys

from eval_data import coco_panoptic, semantic_folder
from helpers import write_recipe

HEAVY = ("torch", "mergekit", "transformers")

# Runs one `layerseg` command in a fresh interpreter and prints which heavy modules it imported.
RUN_COMMAND = """
import json, sys, time
start = time.perf_counter()
from layerseg_merge.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps({"seconds": time.perf_counter() - start,
                  "loaded": sorted(m for m in ("torch", "mergekit", "transformers", "numpy") if m in sys.modules)}))
"""


def run_command(*args, cwd=None, env=None) -> dict:
    result = subprocess.run([sys.executable, "-c", RUN_COMMAND, *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_help_and_version_import_no_heavy_library():
    for args in (["--help"], ["--version"], ["architectures"], ["recipes"], ["eval", "--help"]):
        loaded = run_command(*args)["loaded"]
        assert not set(loaded) & {"torch", "mergekit", "transformers"}, (args, loaded)


def test_import_time_of_the_command_line_is_small():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import layerseg_merge.cli"],
                            capture_output=True, text=True)
    cumulative = {line.split("|")[2].strip(): int(line.split("|")[1]) for line in result.stderr.splitlines()
                  if line.startswith("import time:") and "|" in line and line.split("|")[1].strip().isdigit()}
    assert cumulative["layerseg_merge.cli"] < 500_000  # microseconds; target 1 s for `layerseg --help` in all


def test_score_and_compare_never_import_torch_mergekit_or_transformers(tmp_path):
    data = semantic_folder(tmp_path / "data", count=3)
    report = tmp_path / "r.json"
    loaded = run_command("score", "semantic", "--gt", data / "labels", "--pred", data / "labels",
                         "--num-classes", "5", "--out", report)["loaded"]
    assert not set(loaded) & set(HEAVY), loaded
    images, gt_json, pngs = coco_panoptic(tmp_path / "pan")
    loaded = run_command("score", "panoptic", "--gt-json", gt_json, "--gt-folder", pngs, "--pred-json", gt_json,
                         "--pred-folder", pngs)["loaded"]
    assert not set(loaded) & set(HEAVY), loaded
    assert not set(run_command("compare", report, report, "--label", "a", "--label", "b")["loaded"]) & set(HEAVY)


def test_import_layerseg_merge_is_cheap_and_registers_when_mergekit_loads(tmp_path, segformers):
    env = dict(os.environ, LAYERSEG_MERGE_NO_HOOK="1")  # prove the package's own lazy registration
    script = """
import sys
import layerseg_merge
print("mergekit" in sys.modules, "torch" in sys.modules)
from mergekit.merge_methods import registry
print("layerwise_seg" in {m.spec.name for m in registry.registered_methods()})
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["False", "False", "True"], out.stderr[-2000:]
    # ... and mergekit's Python API then merges with it, with no further import of ours.
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    script = f"""
import layerseg_merge, yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
config = MergeConfiguration.model_validate(yaml.safe_load(open({str(recipe)!r})))
run_merge(config, {str(tmp_path / "out")!r}, MergeOptions(quiet=True, copy_tokenizer=False))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_registration_when_our_own_module_is_what_loads_mergekit():
    script = """
import layerseg_merge.method  # imports mergekit half-way through its own import
from mergekit.architecture.json_definitions import NAME_TO_ARCH
from mergekit.merge_methods import registry
print("layerwise_seg" in {m.spec.name for m in registry.registered_methods()}, "SegformerModel" in NAME_TO_ARCH)
"""
    for hook in ("0", "1"):
        env = dict(os.environ, **({"LAYERSEG_MERGE_NO_HOOK": "1"} if hook == "1" else {}))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]
        assert "not registered" not in out.stderr
