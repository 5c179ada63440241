"""The Python API's refusals speak Python (arguments, not command-line flags); a recipe is read once."""

import os

import pytest
import torch
from click.testing import CliRunner
from helpers import assert_one_line_error, tensors, write_recipe

from layerseg_merge import merge, merge_in_memory
from layerseg_merge.api import MergeFailed
from layerseg_merge.cli import main
from layerseg_merge.io.output import OutputError, StagedOutput


@pytest.mark.parametrize("device", [{"device": "cuda"}, {"device": "cuda:1"}, {"cuda": True}])
@pytest.mark.parametrize("entry", ["merge", "merge_in_memory"])
def test_cuda_without_a_gpu_is_a_python_error(tmp_path, segformers, monkeypatch, device, entry):
    from mergekit.options import MergeOptions

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    options = MergeOptions(**device)
    with pytest.raises(ValueError, match=r"MergeOptions\(device='cuda(:1)?'\) asked for, but this machine has no "
                                         "CUDA device torch can use; leave device out to merge on the CPU") as error:
        if entry == "merge":
            merge(recipe, tmp_path / "out", options=options)
        else:
            merge_in_memory(recipe, options=options)
    assert "--" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_refusals_of_the_output_name_the_python_argument(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="is not empty; pass overwrite=True to replace a previous model output"):
        merge(recipe, tmp_path / "notes")
    with pytest.raises(OutputError, match="holds 'keep.txt', which is not part of a model output; overwrite=True "
                                          "replaces only a previous model output"):
        merge(recipe, tmp_path / "notes", overwrite=True)
    (tmp_path / "old.pth").write_bytes(b"")
    with pytest.raises(OutputError, match="old.pth exists; pass overwrite=True to replace it"):
        with StagedOutput(tmp_path / "old.pth", "file"):
            pass
    with pytest.raises(MergeFailed, match=r"is not an mmseg checkpoint; give a folder as out \(or anchor"):
        merge(recipe, tmp_path / "new.pth")
    # the command line keeps its flags
    assert_one_line_error(CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "notes")]),
                          "is not empty; pass --overwrite to replace")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "x"


@pytest.fixture()
def stdin_pipe():
    """Makes this process's standard input (fd 0, what /dev/stdin opens) a pipe that yields ``text`` once."""
    saved = os.dup(0)

    def feed(text: str) -> None:
        read, write = os.pipe()
        os.write(write, text.encode())
        os.close(write)
        os.dup2(read, 0)
        os.close(read)

    yield feed
    os.dup2(saved, 0)
    os.close(saved)


def test_a_recipe_on_a_pipe_is_read_once(tmp_path, segformers, stdin_pipe):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    stdin_pipe(recipe.read_text())
    result = CliRunner().invoke(main, ["merge", "/dev/stdin", str(tmp_path / "piped")])
    assert result.exit_code == 0, result.output
    stdin_pipe(recipe.read_text())
    in_memory = merge_in_memory("/dev/stdin")
    assert tensors(tmp_path / "piped").keys() == in_memory.keys()
    assert all(torch.equal(tensors(tmp_path / "piped")[name], value) for name, value in in_memory.items())
    assert recipe.read_text().strip() in (tmp_path / "piped" / "README.md").read_text()  # the card quotes it


def test_a_sweep_recipe_on_a_pipe_is_read_once(tmp_path, stdin_pipe):
    from layerseg_merge.resources import recipe_files, recipe_text
    from layerseg_merge.tools.sweep import read_recipe

    text = recipe_text(recipe_files()["miniature_different_sources"])
    stdin_pipe(text)
    setup = read_recipe("/dev/stdin", log=lambda message: None)
    assert len(setup.dirs) == len(setup.models) >= 2


def test_evaluation_devices_are_named_as_python_arguments(monkeypatch):
    from layerseg_merge.eval.inference import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda': this machine has no CUDA device torch can use; use 'cpu'"):
        pick_device("cuda")
    with pytest.raises(ValueError, match=r"device='gpu9': not a device name"):
        pick_device("gpu9")
