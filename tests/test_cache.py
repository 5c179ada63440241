"""The import cache of `.pth` models in recipes: checksums, one import at a time, a size policy, `layerseg cache`."""

import math
import os
import threading

import pytest
import torch
from click.testing import CliRunner
from helpers import assert_one_line_error, tensors, write_recipe
from test_mmseg import small_checkpoint

from layerseg_merge.cli import main
from layerseg_merge.formats import cache


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LAYERSEG_CACHE_MAX_GB", raising=False)
    return tmp_path / "cache"


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def test_a_damaged_entry_is_imported_again(tmp_path, cache_dir):
    checkpoint, _ = small_checkpoint(tmp_path, "daformer", seed=1)
    entry = cache.imported_dir(checkpoint)
    good = {name: value.clone() for name, value in tensors(entry).items()}  # not a view of the file
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    weights.write_bytes(bytes(data))
    assert cache.damage(entry) == "model.safetensors changed since it was written"
    notices = []
    assert cache.imported_dir(checkpoint, log=notices.append) == entry
    assert any(f"cache entry {entry} is damaged" in n and "importing" in n for n in notices), notices
    again = tensors(entry)
    assert all(torch.equal(good[n], again[n]) for n in good)


def test_two_merges_importing_one_checkpoint_wait_for_each_other(tmp_path, cache_dir):
    checkpoint, _ = small_checkpoint(tmp_path, "daformer", seed=1)
    results, errors = [], []

    def one():
        try:
            results.append(cache.imported_dir(checkpoint))
        except Exception as error:  # noqa: BLE001  (the test reports it)
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(results)) == 1 and cache.damage(results[0]) is None
    assert list((cache_dir / "locks").iterdir()) == []  # each import removes its lock file


def test_a_refused_recipe_imports_nothing(tmp_path, cache_dir):
    first, _ = small_checkpoint(tmp_path, "daformer", seed=1)
    second, _ = small_checkpoint(tmp_path, "daformer", seed=2)
    recipe = write_recipe(tmp_path / "r.yaml", [first, second], first, uniform_untill=0.3)
    assert_one_line_error(run("merge", recipe, tmp_path / "out"), "unknown parameter 'uniform_untill'")
    assert not (cache_dir / "mmseg").exists() or not any((cache_dir / "mmseg").iterdir())


def test_the_least_recently_used_entries_go_beyond_the_size_limit(tmp_path, cache_dir, monkeypatch):
    checkpoints = [small_checkpoint(tmp_path, "daformer", seed=s)[0] for s in (1, 2, 3)]
    first = cache.imported_dir(checkpoints[0])
    os.utime(first / cache.MANIFEST, (1, 1))  # used long ago
    size = sum(p.stat().st_size for p in first.iterdir())
    monkeypatch.setenv("LAYERSEG_CACHE_MAX_GB", str(2.5 * size / 1e9))
    recipe = write_recipe(tmp_path / "r.yaml", checkpoints[1:], checkpoints[1])
    result = run("merge", recipe, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"removed cache entry {first}" in result.output and "LAYERSEG_CACHE_MAX_GB" in result.output
    assert not first.exists() and len(cache.entries()) == 2  # the recipe's own entries stay
    monkeypatch.setenv("LAYERSEG_CACHE_MAX_GB", "lots")
    assert_one_line_error(run("merge", recipe, tmp_path / "out2"), "LAYERSEG_CACHE_MAX_GB='lots' is not a size")


def test_layerseg_cache_lists_and_clears_only_its_entries(tmp_path, cache_dir):
    checkpoint, _ = small_checkpoint(tmp_path, "daformer", seed=1)
    entry = cache.imported_dir(checkpoint)
    stranger = cache_dir / "mmseg" / "notes"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    listing = run("cache")
    assert listing.exit_code == 0, listing.output
    assert "1 entries" in listing.output and entry.name in listing.output and str(checkpoint) in listing.output
    cleared = run("cache", "clear")
    assert cleared.exit_code == 0 and "removed 1 cache entries" in cleared.output
    assert not entry.exists() and (stranger / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="is not a layerseg-merge cache entry"):
        cache.remove(stranger)


def test_an_infinite_size_limit_is_no_limit(tmp_path, cache_dir, monkeypatch):
    checkpoints = [small_checkpoint(tmp_path, "daformer", seed=s)[0] for s in (1, 2, 3)]
    old = cache.imported_dir(checkpoints[0])
    os.utime(old / cache.MANIFEST, (1, 1))  # used long ago: the first to go under any finite limit
    monkeypatch.setenv("LAYERSEG_CACHE_MAX_GB", "inf")
    listing = run("cache")
    assert listing.exit_code == 0, listing.output
    assert "1 entries" in listing.output and "(limit none: LAYERSEG_CACHE_MAX_GB" in listing.output
    recipe = write_recipe(tmp_path / "r.yaml", checkpoints[1:], checkpoints[1])
    result = run("merge", recipe, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "removed cache entry" not in result.output and old.exists() and len(cache.entries()) == 3
    for text, limit in (("inf", math.inf), ("Infinity", math.inf), ("1e300", math.inf), ("0.5", 500_000_000)):
        monkeypatch.setenv("LAYERSEG_CACHE_MAX_GB", text)
        assert cache.max_bytes() == limit, text
    for text in ("nan", "-inf", "-1"):
        monkeypatch.setenv("LAYERSEG_CACHE_MAX_GB", text)
        with pytest.raises(ValueError, match=f"LAYERSEG_CACHE_MAX_GB='{text}' is not a size in GB >= 0 \\(or inf"):
            cache.max_bytes()


@pytest.mark.parametrize("name", ["mmseg", "locks", ""])
def test_a_file_where_the_cache_needs_a_folder_is_named(tmp_path, cache_dir, name):
    checkpoints = [small_checkpoint(tmp_path, "daformer", seed=s)[0] for s in (1, 2)]
    (cache_dir / name).parent.mkdir(parents=True, exist_ok=True)
    (cache_dir / name).write_text("not the cache's")
    message = (f"{cache_dir / name} is a file where the import cache needs a folder",
               "move or remove it, or set LAYERSEG_CACHE to another folder")
    recipe = write_recipe(tmp_path / "r.yaml", checkpoints, checkpoints[0])
    assert_one_line_error(run("merge", recipe, tmp_path / "out"), *message)
    if name != "locks":  # listing and clearing read only mmseg/
        assert_one_line_error(run("cache"), *message)
        assert_one_line_error(run("cache", "clear"), *message)
    assert (cache_dir / name).read_text() == "not the cache's" and not (tmp_path / "out").exists()


def test_a_full_disk_during_an_import_leaves_no_lock_and_no_entry(tmp_path, cache_dir, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    import layerseg_merge

    def full(tensors, filename, metadata=None):  # what safetensors raises on a full disk (see test_disk_full.py)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    layerseg_merge.register()  # mergekit's compatibility probes write a file: before the disk is "full"
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    checkpoints = [small_checkpoint(tmp_path, "daformer", seed=s)[0] for s in (1, 2)]
    recipe = write_recipe(tmp_path / "r.yaml", checkpoints, checkpoints[0])
    result = run("merge", recipe, tmp_path / "out")
    assert_one_line_error(result, "merge failed: no space left on the device while writing "
                          f"{cache_dir / 'mmseg'}/", "-student/model.safetensors; free some space")
    assert "imported into" not in result.output  # said only once it is
    assert [p for p in cache_dir.rglob("*") if not p.is_dir()] == []  # no lock file, no partial entry
    assert cache.entries() == [] and not (tmp_path / "out").exists()
