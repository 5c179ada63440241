"""Choosing without target labels: the ensemble's pseudo-labels, inputs alone as candidates, the source veto."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import tensors
from PIL import Image

from layerseg_merge.cli import main
from layerseg_merge.resources import DEMO_ASSETS
from layerseg_merge.tools.unsupervised import IGNORE, Ensemble

MODELS = DEMO_ASSETS / "models"


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def demo_recipe(tmp_path):
    from layerseg_merge.cli.demo import recipe_for

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_for("miniature_different_heads", False, DEMO_ASSETS)))
    return recipe


def folder_of(tmp_path, name: str, count: int, label_model=None):
    """The first ``count`` validation images as a folder dataset, labelled with ``label_model``'s predictions."""
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.eval.options import InferenceOptions

    root = tmp_path / name
    (root / "images").mkdir(parents=True)
    for path in sorted((DEMO_ASSETS / "target_val" / "images").glob("*.png"))[:count]:
        shutil.copy(path, root / "images" / path.name)
    if label_model is not None:
        (root / "labels").mkdir()
        segmenter = Segmenter(label_model, InferenceOptions("cpu"))
        for path in sorted((root / "images").glob("*.png")):
            image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
            (prediction,) = segmenter.semantic(image[None], [tuple(image.shape[1:])])
            Image.fromarray(prediction.to(torch.uint8).numpy()).save(root / "labels" / path.name)
        (root / "classes.txt").write_text((DEMO_ASSETS / "target_val" / "classes.txt").read_text())
    return root


def test_pseudo_labels_are_the_ensembles_argmax_where_it_is_sure():
    ensemble = Ensemble([torch.tensor([[0, 1], [2, 3]], dtype=torch.uint8)],
                        [torch.tensor([[0.9, 0.4], [0.5, 0.99]])], 4)
    (pseudo,) = ensemble.pseudo_labels(0.5)
    assert pseudo.tolist() == [[0, IGNORE], [2, 3]]
    (everything,) = ensemble.pseudo_labels(0.0)
    assert everything.tolist() == [[0, 1], [2, 3]]


def test_the_pseudo_miou_of_a_candidate_equals_an_independent_computation(tmp_path):
    from layerseg_merge.eval.datasets import open_dataset
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.eval.options import InferenceOptions
    from layerseg_merge.tools.scoring import CachedBatches
    from layerseg_merge.tools.unsupervised import ensemble_of, pseudo_miou_score

    images = folder_of(tmp_path, "images", 6)
    dataset = open_dataset(f"images:{images}", task="images")
    batches = CachedBatches(dataset, 3, 0, False, 2**30, list(range(6)), 6)
    inputs = [Segmenter(MODELS / name, InferenceOptions("cpu")) for name in ("dacs", "dr", "mic")]
    ensemble = ensemble_of(inputs, batches)
    score = pseudo_miou_score(inputs[1], batches, ensemble.pseudo_labels(0.5), ensemble.classes)["score"]
    # independently: mean softmax of the three, confident pixels, dr's argmax against it, mIoU over classes seen
    inter, union = np.zeros(6), np.zeros(6)
    for index in range(6):
        image = torch.from_numpy(dataset[index]["image"]).permute(2, 0, 1)[None]
        size = [tuple(image.shape[-2:])]
        probabilities = [s.logits(image, size)[0, :6].softmax(0) for s in inputs]
        mean = sum(probabilities) / 3
        keep = (mean.max(0).values >= 0.5).numpy()
        label, prediction = mean.argmax(0).numpy()[keep], probabilities[1].argmax(0).numpy()[keep]
        for c in range(6):
            inter[c] += ((label == c) & (prediction == c)).sum()
            union[c] += ((label == c) | (prediction == c)).sum()
    present = union > 0
    assert score == pytest.approx(float(np.mean(inter[present] / union[present])), abs=1e-12)


@pytest.mark.parametrize("unsupervised", [False, True])
def test_every_input_alone_is_a_candidate_and_its_recipe_reproduces_it(tmp_path, unsupervised):
    """"Do not merge" is an answer: labels made by one input alone make it the winner, and best_recipe.yaml then
    merges back exactly that model (the others at weight 0)."""
    recipe = demo_recipe(tmp_path)
    dr = yaml.safe_load(recipe.read_text())["models"][1]["model"]
    data = folder_of(tmp_path, "val", 6, label_model=dr)
    options = ["--unsupervised", "--confidence", "0"] if unsupervised else []
    result = run("sweep", recipe, "--data", f"{'images' if unsupervised else 'folder'}:{data}", "--out",
                 tmp_path / "sweep", "--device", "cpu", "--workers", "0", "--grid", "uniform_until=0,1", "--grid",
                 "anchor_max=1", "--grid", "schedule=linear", *options)
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "sweep" / "candidates.json").read_text())
    alone = [row for row in found["candidates"] if row["alone"]]
    assert sorted(row["anchor"] for row in alone) == sorted(yaml.safe_load(recipe.read_text())["models"][i]["model"]
                                                            for i in range(3))
    if unsupervised:
        assert found["selector"] == "pseudo-miou" and found["confidence"] == 0
        return  # (the ensemble, not dr, labels the images here)
    best = found["candidates"][0]
    assert best["alone"] and best["anchor"] == dr and best["score"] == 1.0
    assert found["margin"] > 0 and "margin to the runner-up" in (tmp_path / "sweep" / "candidates.md").read_text()
    written = (tmp_path / "sweep" / "best_recipe.yaml").read_text()
    assert "No merge beat dr alone" in written
    assert run("merge", tmp_path / "sweep" / "best_recipe.yaml", tmp_path / "again").exit_code == 0
    again, original = tensors(tmp_path / "again"), tensors(dr)
    assert again.keys() == original.keys() and all(torch.equal(again[n], original[n]) for n in original)


def test_the_source_veto_drops_merges_that_lose_the_anchors_source_skill(tmp_path):
    recipe = demo_recipe(tmp_path)
    dacs = yaml.safe_load(recipe.read_text())["base_model"]
    target = folder_of(tmp_path, "target", 4, label_model=MODELS / "mic")
    source = folder_of(tmp_path, "source", 4, label_model=dacs)  # the anchor alone is perfect on "source"
    result = run("sweep", recipe, "--data", f"folder:{target}", "--source-data", f"folder:{source}", "--veto-margin",
                 "0.01", "--out", tmp_path / "sweep", "--device", "cpu", "--workers", "0", "--grid",
                 "uniform_until=0,1", "--grid", "anchor_max=0.5", "--grid", "schedule=linear", "--grid", "anchor=0")
    assert result.exit_code == 0, result.output
    assert "source mIoU of each anchor alone: dacs 100.00" in result.output
    found = json.loads((tmp_path / "sweep" / "candidates.json").read_text())
    assert found["source_veto"] == {"data": f"folder:{source}", "margin": 0.01}
    vetoed = [row for row in found["candidates"] if row["vetoed"]]
    kept = [row for row in found["candidates"] if not row["vetoed"]]
    assert vetoed and all(row["source_score"] < 0.99 for row in vetoed)
    assert all(row["source_score"] >= 0.99 for row in kept)
    assert found["candidates"][: len(kept)] == kept  # the vetoed are listed last, never chosen
    assert "(vetoed)" in (tmp_path / "sweep" / "candidates.md").read_text()


@pytest.mark.parametrize("option,message", [
    (["--selector", "entropy"], "Invalid value for '--selector'"),
    (["--confidence", "1.5"], "--confidence 1.5"),
    (["--veto-margin", "-0.1"], "--veto-margin -0.1"),
])
def test_impossible_selector_settings_are_refused(tmp_path, option, message):
    result = run("sweep", demo_recipe(tmp_path), "--data", "images:nowhere", "--out", tmp_path / "out", *option)
    assert result.exit_code != 0 and message in result.output
