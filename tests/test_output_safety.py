"""`layerseg merge` never loses a user's files: refusals, atomic replacement, locks, interrupted runs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, tensors, tree_digest, write_recipe

from layerseg_merge.cli import main
from layerseg_merge.io.output import OutputError, StagedOutput


def merge(*args):
    return CliRunner().invoke(main, ["merge", *map(str, args)])


def previous_output(tmp_path, segformers) -> Path:
    """A model output of an earlier merge (the thing --overwrite may replace)."""
    out = tmp_path / "out"
    assert merge(write_recipe(tmp_path / "earlier.yaml", segformers, segformers[1]), out).exit_code == 0
    return out


def test_overwrite_of_the_current_directory_is_refused(tmp_path, segformers, inputs_untouched, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    write_recipe(work / "r.yaml", segformers, segformers[0])
    monkeypatch.chdir(work)
    before = tree_digest(work)
    assert_one_line_error(merge("r.yaml", ".", "--overwrite"), "output . is the current directory")
    assert_one_line_error(merge("r.yaml", "..", "--overwrite"), "contains the current directory")
    assert tree_digest(work) == before


@pytest.mark.parametrize("where", ["input", "parent of inputs", "inside input"])
def test_output_may_not_be_contain_or_lie_inside_an_input(tmp_path, segformers, inputs_untouched, where):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    out = {"input": segformers[1], "parent of inputs": segformers[0].parent,
           "inside input": segformers[2] / "merged"}[where]
    relation = {"input": "is", "parent of inputs": "contains", "inside input": "lies inside"}[where]
    assert_one_line_error(merge(recipe, out, "--overwrite"), f"output {out} {relation} the input")
    assert not (segformers[2] / "merged").exists()


def test_output_may_not_contain_the_recipe(tmp_path, segformers, inputs_untouched):
    folder = tmp_path / "project"
    folder.mkdir()
    recipe = write_recipe(folder / "r.yaml", segformers, segformers[0])
    assert_one_line_error(merge(recipe, folder, "--overwrite"), "is the folder of the recipe")
    assert recipe.exists()


def test_overwrite_replaces_only_a_previous_model_output(tmp_path, segformers, inputs_untouched):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("x")
    assert_one_line_error(merge(recipe, notes), "is not empty; pass --overwrite")
    assert_one_line_error(merge(recipe, notes, "--overwrite"), "holds 'keep.txt'", "not part of a model output")
    assert (notes / "keep.txt").read_text() == "x"

    out = previous_output(tmp_path, segformers)
    old = tensors(out)
    result = merge(recipe, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not all((tensors(out)[k] == old[k]).all() for k in old)  # the new merge (anchor m0, not m1)
    (out / "extra.bin").write_bytes(b"?")  # something a user added: no longer only a model output
    assert_one_line_error(merge(recipe, out, "--overwrite"), "holds 'extra.bin'")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert merge(recipe, empty).exit_code == 0  # an empty folder needs no --overwrite


def test_output_folder_and_files_follow_the_umask(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    previous = os.umask(0o022)
    try:
        assert merge(recipe, tmp_path / "out").exit_code == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "out" / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_second_writer_is_refused_while_the_first_holds_the_output(tmp_path, segformers, inputs_untouched):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    with StagedOutput(tmp_path / "out"):
        assert_one_line_error(merge(recipe, tmp_path / "out"), "is being written by another process",
                              f"pid {os.getpid()}")
    assert not (tmp_path / "out").exists()
    assert merge(recipe, tmp_path / "out").exit_code == 0  # the lock is released
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.yaml"]  # no lock file, no staging


def test_dangling_symlink_and_file_outputs_are_refused_before_merging(tmp_path, segformers, monkeypatch):
    import mergekit.merge

    monkeypatch.setattr(mergekit.merge, "run_merge", lambda *a, **k: pytest.fail("merge ran"))
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert_one_line_error(merge(recipe, tmp_path / "link"), "is a symbolic link")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(merge(recipe, tmp_path / "file" / "out"), "is not a folder")


def test_unwritable_places_are_refused_before_merging(tmp_path, segformers, monkeypatch):
    import mergekit.merge

    monkeypatch.setattr(mergekit.merge, "run_merge", lambda *a, **k: pytest.fail("merge ran"))
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    parent = tmp_path / "readonly"
    parent.mkdir()
    real_access = os.access

    def no_write(place):
        return lambda p, mode: False if Path(p) == place and mode & os.W_OK else real_access(p, mode)

    monkeypatch.setattr(os, "access", no_write(parent))
    assert_one_line_error(merge(recipe, parent / "out"), f"cannot write in {parent} (permission denied)")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "config.json").write_text("{}")
    (locked / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(os, "access", no_write(locked))
    assert_one_line_error(merge(recipe, locked, "--overwrite"), f"{locked} cannot be replaced")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "r.yaml", "readonly"]


def test_failed_final_move_and_disk_full_leave_nothing(tmp_path, segformers, monkeypatch, inputs_untouched):
    import errno

    from mergekit.io import tensor_writer

    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    original = tensor_writer.TensorWriter.save_tensor

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(self.out_path) / "model.safetensors"))

    monkeypatch.setattr(tensor_writer.TensorWriter, "save_tensor", full)
    assert_one_line_error(merge(recipe, tmp_path / "out"), "no space left on the device", "free some space")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
    monkeypatch.setattr(tensor_writer.TensorWriter, "save_tensor", original)

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(errno.EXDEV, "Invalid", str(b))))
    assert_one_line_error(merge(recipe, tmp_path / "out"), "merge failed")
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_ctrl_c_during_the_merge_removes_the_staging(tmp_path, segformers, monkeypatch):
    import mergekit.merge

    def interrupted(config, out_path, **kwargs):
        assert Path(out_path).name.startswith(".out.partial-")
        raise KeyboardInterrupt

    monkeypatch.setattr(mergekit.merge, "run_merge", interrupted)
    result = merge(write_recipe(tmp_path / "r.yaml", segformers, segformers[0]), tmp_path / "runs" / "out")
    assert result.exit_code == 130 and "interrupted; nothing was written" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # the parents it made are gone too


# A `layerseg merge` whose merge finishes and then waits, so that a test can signal it mid-run.
SLOW_MERGE = """
import os, sys, time
import mergekit.merge
original = mergekit.merge.run_merge
def slow(*args, **kwargs):
    original(*args, **kwargs)
    open(os.environ["MERGE_FINISHED"], "w").close()
    time.sleep(60)
mergekit.merge.run_merge = slow
from layerseg_merge.cli import main
sys.argv = ["layerseg", "merge", *sys.argv[1:]]
main()
"""


def start_slow_merge(recipe, out, *options):
    """Returns once the merge has written everything and waits (signals then reach Python, not a writer)."""
    import tempfile

    finished = Path(tempfile.mkdtemp()) / "finished"
    process = subprocess.Popen([sys.executable, "-c", SLOW_MERGE, str(recipe), str(out), *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, MERGE_FINISHED=str(finished)))
    deadline = time.monotonic() + 120
    while not finished.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return process


def test_concurrent_merge_is_refused_and_sigterm_cleans_up(tmp_path, segformers, inputs_untouched):
    out = previous_output(tmp_path, segformers)
    before = tree_digest(out)
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    first = start_slow_merge(recipe, out, "--overwrite")
    assert_one_line_error(merge(recipe, out, "--overwrite"), "is being written by another process")
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 143 and "terminated; nothing was written" in stderr
    assert tree_digest(out) == before  # the old output, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier.yaml", "out", "r.yaml"]


def test_sigkill_leaves_the_old_output_and_the_next_run_cleans_up(tmp_path, segformers, inputs_untouched):
    out = previous_output(tmp_path, segformers)
    before = tree_digest(out)
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    process = start_slow_merge(recipe, out, "--overwrite")
    process.kill()
    process.communicate(timeout=60)
    assert tree_digest(out) == before
    (stale,) = tmp_path.glob(".out.partial-*")
    result = merge(recipe, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert f"removed {stale}, left behind by an interrupted run" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier.yaml", "out", "r.yaml"]


# Kill points inside the replacement itself (no mergekit needed: StagedOutput alone).
KILL_DURING_COMMIT = """
import os, sys
from pathlib import Path
import layerseg_merge.io.output as output
target, point = Path(sys.argv[1]), sys.argv[2]
if point == "after-exchange":
    output._remove = lambda path: os._exit(9)
elif point == "between-renames":
    output._exchange = lambda a, b: False
    real_rename = os.rename
    def rename(a, b):
        real_rename(a, b)
        if Path(a) == target:
            os._exit(9)
    os.rename = rename
with output.StagedOutput(target, overwrite=True) as staged:
    (staged.staging / "config.json").write_text("{}")
    (staged.staging / "model.safetensors").write_text("new")
    staged.commit()
"""


@pytest.mark.parametrize("point", ["after-exchange", "between-renames"])
def test_a_kill_during_replacement_leaves_old_or_new_and_is_repaired(tmp_path, point):
    target = tmp_path / "out"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_text("old")
    result = subprocess.run([sys.executable, "-c", KILL_DURING_COMMIT, str(target), point], capture_output=True)
    assert result.returncode == 9, result.stderr
    if point == "after-exchange":  # the swap happened: the new output is complete in place
        assert (target / "model.safetensors").read_text() == "new"
    else:  # killed between the two renames: the old output waits beside the target
        assert not target.exists()
    messages = []
    with pytest.raises(OutputError, match="is not empty"):
        with StagedOutput(target, log=messages.append):
            pass
    if point == "between-renames":
        assert messages[0].startswith(f"restored {target} from .out.old-")
    assert messages[-1].startswith(f"removed {tmp_path / '.out.partial-'}")
    expected = "new" if point == "after-exchange" else "old"
    assert (target / "model.safetensors").read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_input_file_linked_into_the_output_is_refused(tmp_path, segformers, inputs_untouched):
    """A user "promoted" a previous merge by linking its weights into an input: replacing OUT would change it."""
    import shutil

    out = previous_output(tmp_path, segformers)
    promoted = tmp_path / "promoted"
    promoted.mkdir()
    shutil.copy(segformers[0] / "config.json", promoted / "config.json")
    (promoted / "model.safetensors").symlink_to(out / "model.safetensors")
    before = tree_digest(out, promoted)
    recipe = write_recipe(tmp_path / "r.yaml", [segformers[0], promoted], segformers[0])
    assert_one_line_error(merge(recipe, out, "--overwrite"),
                          f"the input file {promoted / 'model.safetensors'} is a link into the output {out}")
    assert tree_digest(out, promoted) == before


def test_plain_mergekit_yaml_refuses_an_input_as_output(tmp_path, segformers, inputs_untouched):
    from helpers import mergekit_yaml

    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    code, text = mergekit_yaml(recipe, segformers[1])
    assert code != 0
    assert f"output {segformers[1]} is the input {segformers[1]}" in text


# A writer killed with SIGKILL while a child of it still runs: one it forked (a DataLoader worker) or a program it
# started with the lock's descriptor (which keeps the lock, as any process holding that descriptor does).
KILLED_WITH_A_LIVE_CHILD = """
import os, signal, subprocess, sys, time
from pathlib import Path
import layerseg_merge.io.output as output
with output.StagedOutput(Path(sys.argv[1]), overwrite=True) as staged:
    if sys.argv[2] == "forked":
        child = os.fork()
        if child == 0:
            os.close(1), os.close(2)
            time.sleep(60)
            os._exit(0)
    else:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=[staged._lock_fd],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid
    print(child, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("child", ["forked", "given the lock's descriptor"])
def test_a_lock_left_by_a_killed_writer_with_a_live_child_is_free(tmp_path, child):
    target = tmp_path / "out"
    process = subprocess.run([sys.executable, "-c", KILLED_WITH_A_LIVE_CHILD, str(target), child],
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == -signal.SIGKILL
    worker = int(process.stdout.split()[0])
    try:
        os.kill(worker, 0)  # the child still runs
        notices = []
        with StagedOutput(target, overwrite=True, log=notices.append) as staged:
            (staged.staging / "config.json").write_text("{}")
            (staged.staging / "model.safetensors").write_text("new")
            staged.commit()
        taken_over = [n for n in notices if "removed the lock of process" in n and "which no longer runs" in n]
        assert len(taken_over) == (child != "forked"), notices  # a forked child never held the lock
        assert (target / "model.safetensors").read_text() == "new"
    finally:
        os.kill(worker, signal.SIGKILL)


# A child forked inside the writer's block that leaves it (an exception raised in the child, as a Ctrl-C that
# reached a starting DataLoader worker once did): the staging and the lock are the writer's, not the child's.
CHILD_LEAVING_THE_BLOCK = """
import os, sys
from pathlib import Path
import layerseg_merge.io.output as output
with output.StagedOutput(Path(sys.argv[1])) as staged:
    child = os.fork()
    if child == 0:
        staged.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
        os._exit(0)
    os.waitpid(child, 0)
    print(staged.staging.is_dir(), staged._lock_path.exists(), flush=True)
"""


def test_a_forked_child_leaving_the_block_leaves_the_writers_output_alone(tmp_path):
    result = subprocess.run([sys.executable, "-c", CHILD_LEAVING_THE_BLOCK, str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "True"], result.stderr  # staging and lock still there
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the writer cleaned up on leaving
