"""The import cache of `.pth` models in recipes: checksums, one import at a time, a size policy, `layerseg cache`."""

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
