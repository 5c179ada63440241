"""A full disk while writing (ENOSPC): the README's message, naming the file, and nothing left behind.

The disk is filled by making the writers raise what they raise on a full disk: safetensors (mergekit's
shard writer, `layerseg import mmseg`) words it "... (os error 28)" in a SafetensorError.
"""

import errno
import os

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, write_recipe
from mmseg_reference import small_checkpoint

from layerseg_merge.cli import main

FULL = "free some space or choose another output"


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture()
def full_disk(monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def save_file(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def test_merge_names_its_output(tmp_path, segformers, inputs_untouched, full_disk):
    out = tmp_path / "merged"
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    assert_one_line_error(run("merge", recipe, out), f"merge failed: no space left on the device while writing {out}; "
                          f"{FULL}")
    assert sorted(os.listdir(tmp_path)) == ["r.yaml"]  # no OUT, no staging left


def test_import_mmseg_names_the_file(tmp_path, full_disk):
    checkpoint, _ = small_checkpoint(tmp_path, "daformer", container="published")
    out = tmp_path / "imported"
    assert_one_line_error(run("import", "mmseg", checkpoint, out),
                          f"import failed: no space left on the device while writing {out / 'model.safetensors'}; "
                          f"{FULL}")
    assert not out.exists() and sorted(os.listdir(tmp_path)) == [checkpoint.name]


def test_the_message_names_the_file_the_user_gave_not_the_staging_copy():
    from layerseg_merge.cli.reporting import describe, user_path

    staged = "/data/.merged.partial-4242-0123abcd/model.safetensors"
    assert user_path(staged) == "/data/merged/model.safetensors"
    assert user_path("/data/.r.json.partial-1-deadbeef") == "/data/r.json"
    assert user_path("/data/.hidden/x") == "/data/.hidden/x"
    assert describe(OSError(errno.ENOSPC, "No space left on device", staged), "merge") == \
        f"merge failed: no space left on the device while writing /data/merged/model.safetensors; {FULL}"
