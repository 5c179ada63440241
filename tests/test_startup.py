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


def test_merge_help_and_early_errors_import_no_heavy_library(tmp_path, segformers):
    """`layerseg merge` answers at once: its --help and the errors found before merging need no mergekit.

    Where the installed mergekit declares other options than the shipped description (the upstream
    series applied), its options are read from mergekit itself, on purpose: then only the messages count.
    """
    from layerseg_merge.cli.merge_options import SPEC, options_source

    described = json.loads(SPEC.read_text())["source"] == options_source()
    assert not described or not set(run_command("merge", "--help")["loaded"]) & set(HEAVY)
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    (tmp_path / "bad.yaml").write_text("models: [")
    missing = write_recipe(tmp_path / "missing.yaml", [segformers[0], tmp_path / "gone"], segformers[0])
    cases = {"no such recipe file": ("nothere.yaml", tmp_path / "o1"),
             "not valid YAML": (tmp_path / "bad.yaml", tmp_path / "o2"),
             "is not empty; pass --overwrite": (recipe, tmp_path / "full"),
             "is the current directory": (recipe, "."),
             f"model {tmp_path / 'gone'} not found": (missing, tmp_path / "o3")}
    script = RUN_COMMAND.replace("except SystemExit:",
                                 "except Exception as error:\n    print(error)\nexcept SystemExit:")
    for message, (recipe_path, out) in cases.items():
        result = subprocess.run([sys.executable, "-c", script, "merge", str(recipe_path), str(out)],
                                capture_output=True, text=True, cwd=tmp_path)
        assert message in result.stdout + result.stderr, (message, result.stdout, result.stderr[-1000:])
        loaded = json.loads(result.stdout.strip().splitlines()[-1])["loaded"]
        assert not described or not set(loaded) & {"mergekit", "torch"}, (message, loaded)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()


def test_the_shipped_merge_options_are_those_of_the_installed_mergekit():
    """`layerseg merge --help` lists mergekit's options from merge_options.json: it must not drift."""
    from layerseg_merge.cli.merge_options import SPEC, live_spec, merge_option_params

    shipped, live = json.loads(SPEC.read_text()), json.loads(json.dumps(live_spec()))
    if shipped["mergekit"] == live["mergekit"] and shipped["source"] != live["source"]:
        # the pinned release with the upstream series applied: its own options are used, not the file
        assert not merge_option_params()[1] and "strict_parameters" in {o["name"] for o in live["options"]}
        return
    assert shipped == live, "mergekit's options changed: run `python -m layerseg_merge.cli.merge_options`"


def test_merge_options_reach_mergekit(tmp_path, segformers):
    """Options parsed from the shipped description are parsed again by mergekit (shard sizes, flags, counts)."""
    from click.testing import CliRunner

    from layerseg_merge.cli import main

    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "out"), "--out-shard-size", "20K",
                                       "--no-write-model-card", "-v", "--quiet"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "model.safetensors.index.json" in names and "README.md" not in names, names
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "bad"), "--out-shard-size", "lots"])
    assert result.exit_code != 0 and "lots" in result.output


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
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    # ... and mergekit's Python API then merges with it, with no further import of ours.
    script = f"""
import sys
import layerseg_merge
print("mergekit" in sys.modules, "torch" in sys.modules)
from mergekit.merge_methods import registry
print("layerwise_seg" in {{m.spec.name for m in registry.registered_methods()}})
import yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
config = MergeConfiguration.model_validate(yaml.safe_load(open({str(recipe)!r})))
run_merge(config, {str(tmp_path / "out")!r}, MergeOptions(quiet=True, copy_tokenizer=False))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:3] == ["False", "False", "True"], out.stdout[-2000:]
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_registration_when_our_own_module_is_what_loads_mergekit():
    """With the start-up hook and without: registered, and the workarounds installed are those mergekit needs."""
    from layerseg_merge.plugin.compat import WORKAROUNDS, lacks

    script = """
import json
import layerseg_merge.plugin.method  # imports mergekit half-way through its own import
from mergekit.architecture.json_definitions import NAME_TO_ARCH
from mergekit.merge_methods import registry
import mergekit.merge
from layerseg_merge.plugin.compat import active
print("layerwise_seg" in {m.spec.name for m in registry.registered_methods()}, "SegformerModel" in NAME_TO_ARCH)
print(json.dumps(active()))
"""
    expected = [name for name in WORKAROUNDS if lacks(name)]
    environment = {k: v for k, v in os.environ.items() if k != "LAYERSEG_MERGE_NO_HOOK"}
    for hook in (True, False):
        env = environment if hook else dict(environment, LAYERSEG_MERGE_NO_HOOK="1")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        registered, installed = out.stdout.strip().splitlines()[-2:]
        assert registered.split() == ["True", "True"], out.stderr[-2000:]
        assert "not registered" not in out.stderr
        # without the start-up hook the package registers itself on import: the hook is not in use
        assert json.loads(installed) == (expected if hook else [n for n in expected if n != "startup_hook"])


def test_any_plugin_module_imported_first_still_registers():
    """Whichever of the plugin's modules is imported first, and so imports mergekit half-way through its own
    import, the start-up hook's registration completes (a module mergekit's import reaches back into must not
    import mergekit at its top)."""
    script = """
import {module}
from mergekit.merge_methods import registry
from mergekit.architecture import arch_info_for_config
from transformers import SegformerConfig
arch = arch_info_for_config(SegformerConfig(architectures=["SegformerForSemanticSegmentation"]))
print("layerwise_seg" in {{m.spec.name for m in registry.registered_methods()}}, arch.expected_model_type)
"""
    environment = {k: v for k, v in os.environ.items() if k != "LAYERSEG_MERGE_NO_HOOK"}
    modules = ("compat", "planning", "architectures", "recipe", "method")
    runs = {module: subprocess.Popen([sys.executable, "-c", script.format(module=f"layerseg_merge.plugin.{module}")],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
            for module in modules}
    for module, run in runs.items():
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, (module, stderr[-2000:])
        assert stdout.split()[-2:] == ["True", "layerseg"], (module, stdout, stderr[-2000:])
        assert "not registered" not in stderr, (module, stderr[-2000:])


def test_the_method_without_mergekit_imports_neither_mergekit_nor_click():
    script = """
import pkgutil, importlib, sys
import layerseg_merge.engine as engine
for module in pkgutil.iter_modules(engine.__path__):
    importlib.import_module(f"layerseg_merge.engine.{module.name}")
print(sorted(m for m in ("mergekit", "click", "transformers") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
