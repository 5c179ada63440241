import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import save_model, tiny_segformer_config  # noqa: E402


def pytest_configure(config):
    # Also registered in pyproject.toml; repeated here for `layerseg selftest` from a wheel (no pyproject).
    config.addinivalue_line("markers", "slow: long opt-in tests (deselected by default; run with -m slow)")
    # mergekit 0.1.5 reads numpy.core at import (its lazy unpickler): not ours to fix, as in pyproject.toml.
    config.addinivalue_line("filterwarnings", "ignore:numpy.core is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def segformers(tmp_path_factory) -> list[Path]:
    """Three tiny random SegFormers (same config, different weights and BN statistics)."""
    from transformers import SegformerForSemanticSegmentation

    root = tmp_path_factory.mktemp("segformers")
    config = tiny_segformer_config()
    paths = [save_model(SegformerForSemanticSegmentation, config, root / f"m{i}", seed=i) for i in range(3)]
    (paths[0] / "preprocessor_config.json").write_text(
        '{"image_processor_type": "SegformerImageProcessor", "do_resize": false}'
    )
    return paths


@pytest.fixture()
def inputs_untouched(segformers):
    """Fails the test if any file of the shared tiny models changed (checksums before and after)."""
    from helpers import tree_digest

    before = tree_digest(*segformers)
    yield
    assert tree_digest(*segformers) == before


def run_in_process(recipe: Path, out: Path, **options) -> Path:
    """Run a recipe through mergekit's own Python API (run_merge)."""
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    import layerseg_merge  # noqa: F401

    config = MergeConfiguration.model_validate(yaml.safe_load(recipe.read_text()))
    run_merge(config, str(out), MergeOptions(quiet=True, copy_tokenizer=False, **options))
    return out


@pytest.fixture()
def models(tmp_path, segformers):
    """Copies of the tiny SegFormers (BatchNorm in the decode head), each with an image processor (any of
    them may become the anchor)."""
    import shutil

    copies = []
    for index, path in enumerate(segformers):
        copy = tmp_path / f"model{index}"
        shutil.copytree(path, copy)
        shutil.copy(segformers[0] / "preprocessor_config.json", copy / "preprocessor_config.json")
        copies.append(copy)
    return copies
