"""The model card of a merge and `layerseg eval --card`: Hugging Face metadata that parses."""

import json
import re
import shutil

import yaml
from click.testing import CliRunner
from eval_data import semantic_folder
from helpers import mergekit_yaml, write_recipe
from PIL import Image

from layerseg_merge.cli import main
from layerseg_merge.models.card import front_matter


def card(model_dir) -> tuple[dict, str]:
    return front_matter((model_dir / "README.md").read_text())


def test_merge_writes_a_segmentation_card_with_the_schedule_plot(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[1], uniform_until=0.25)
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    metadata, body = card(tmp_path / "merged")
    assert metadata["pipeline_tag"] == "image-segmentation" and metadata["library_name"] == "transformers"
    assert {"layerwise_seg", "mergekit", "semantic-segmentation"} <= set(metadata["tags"])
    assert "base_model" not in metadata  # local paths are not Hub ids
    assert body.startswith("# merged\n") and "language model" not in body
    assert "uniform_until: 0.25" in body and f"`{segformers[1]}` (anchor)" in body
    with Image.open(tmp_path / "merged" / "coefficients.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300


def test_the_plot_records_the_coefficients_the_kernel_used(tmp_path, segformers):
    from conftest import run_in_process
    from helpers import expected_coefficients, segformer_depths, tiny_segformer_config

    from layerseg_merge.plugin.planning import merge_record

    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0], weights=[2.0, 1.0, 1.0],
                          schedule="cosine", heads="schedule", anchor_max=0.8)
    run_in_process(recipe, tmp_path / "out")
    role_depth = segformer_depths(tiny_segformer_config())
    record = merge_record()
    assert record.out_path == str(tmp_path / "out") and len(record.coefficients) > 100
    for name, (_, _, used) in record.coefficients.items():
        want = expected_coefficients([2.0, 1.0, 1.0], 0, *role_depth(name), schedule="cosine", heads="schedule",
                                     anchor_max=0.8)
        assert [used[str(p)] for p in segformers] == [__import__("pytest").approx(w) for w in want], name


def test_plain_mergekit_yaml_writes_our_card_too(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    code, text = mergekit_yaml(recipe, tmp_path / "out")
    assert code == 0, text[-3000:]
    assert card(tmp_path / "out")[0]["pipeline_tag"] == "image-segmentation"
    assert (tmp_path / "out" / "coefficients.png").exists()


def test_eval_card_adds_model_index_results(tmp_path, segformers):
    model = tmp_path / "model"
    shutil.copytree(segformers[0], model)  # has a preprocessor config, no card yet
    data = semantic_folder(tmp_path / "data", count=2)
    args = ["eval", str(model), "--data", f"folder:{data}", "--workers", "0", "--card",
            "--out", str(tmp_path / "r.json")]
    for _ in range(2):  # a second run replaces the result instead of adding another
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert re.search(r"2 images in [\d.]+ s on cpu \([\d.]+ img/s; start-up before the first batch [\d.]+ s, "
                     r"not counted\)", result.output), result.output
    report = json.loads((tmp_path / "r.json").read_text())
    metadata, _ = card(model)
    (entry,) = metadata["model-index"]
    assert entry["name"] == "model"
    (result_entry,) = entry["results"]
    assert result_entry["task"]["type"] == "semantic-segmentation"
    # a folder is read whole: no split; the images scored, in the name people read and as args
    assert result_entry["dataset"] == {"name": "data (2 images)", "type": "folder", "args": {"images": 2}}
    metrics = {m["name"]: m["value"] for m in result_entry["metrics"]}
    assert metrics["mIoU"] == round(100 * report["mIoU"], 2) and set(metrics) == {"mIoU", "aAcc", "mAcc"}
    yaml.safe_dump(metadata)  # round-trips


def test_eval_card_keeps_the_merge_card(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    assert CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "merged")]).exit_code == 0
    data = semantic_folder(tmp_path / "data", count=2)
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "merged"), "--data", f"folder:{data}", "--workers",
                                       "0", "--card", "--split", "test"])
    assert result.exit_code == 0, result.output
    metadata, body = card(tmp_path / "merged")
    assert metadata["pipeline_tag"] == "image-segmentation" and "layerwise_seg" in metadata["tags"]
    # --split does not apply to a folder: the card does not claim the test split was read
    assert "split" not in metadata["model-index"][0]["results"][0]["dataset"]
    assert "## Recipe" in body


SEMANTIC = {"mIoU": 0.5, "aAcc": 0.75, "mAcc": 0.625, "per_class": {}}


def results(model_dir) -> list[dict]:
    return card(model_dir)[0]["model-index"][0]["results"]


def test_card_records_the_split_and_conditions_really_read(tmp_path):
    from layerseg_merge.eval.card_results import add_eval_result

    add_eval_result(tmp_path, SEMANTIC, "cityscapes:/data/cityscapes", "val")
    add_eval_result(tmp_path, SEMANTIC, "acdc:/data/acdc,night", "val")
    add_eval_result(tmp_path, SEMANTIC, "acdc:/data/acdc", "val")
    add_eval_result(tmp_path, {"All": {"pq": 0.4, "sq": 0.8, "rq": 0.5}}, "coco-panoptic:im,ann/panoptic_val.json,png",
                    "test")
    datasets = [r["dataset"] for r in results(tmp_path)]
    assert datasets == [{"name": "Cityscapes", "type": "cityscapes", "split": "val"},
                        {"name": "ACDC", "type": "acdc", "config": "night", "split": "val"},
                        {"name": "ACDC", "type": "acdc", "split": "val"},
                        {"name": "COCO panoptic (panoptic_val.json)", "type": "coco-panoptic"}]


def test_card_says_how_many_images_and_a_rerun_replaces_the_result(tmp_path):
    """An 8-image subset never reads as "Cityscapes val": the count is in the dataset's name and args."""
    from layerseg_merge.eval.card_results import add_eval_result

    def scored(images: int, miou: float) -> dict:
        return SEMANTIC | {"mIoU": miou, "provenance": {"data": {"images": images}}}

    add_eval_result(tmp_path, scored(8, 0.5), "cityscapes:/data/cityscapes", "val")
    (entry,) = results(tmp_path)
    assert entry["dataset"] == {"name": "Cityscapes (8 images)", "type": "cityscapes", "split": "val",
                                "args": {"images": 8}}
    add_eval_result(tmp_path, scored(1, 0.25), "cityscapes:/data/cityscapes", "train")  # another split: kept
    add_eval_result(tmp_path, scored(500, 0.625), "cityscapes:/data/cityscapes", "val")  # the whole split
    names = {(r["dataset"]["name"], r["dataset"].get("split")): {m["name"]: m["value"] for m in r["metrics"]}
             for r in results(tmp_path)}
    assert names == {("Cityscapes (1 image)", "train"): {"mIoU": 25.0, "aAcc": 75.0, "mAcc": 62.5},
                     ("Cityscapes (500 images)", "val"): {"mIoU": 62.5, "aAcc": 75.0, "mAcc": 62.5}}


def test_two_folders_keep_their_own_names_and_numbers(tmp_path):
    """huggingface_hub groups results by task, type, config and split: two folder: datasets (one type) must not
    merge under the first one's name; a rerun on either replaces its own result."""
    from layerseg_merge.eval.card_results import add_eval_result

    for spec, miou in (("folder:/d/day", 0.5), ("folder:/d/night", 0.25), ("folder:/d/night", 0.125)):
        add_eval_result(tmp_path, SEMANTIC | {"mIoU": miou}, spec, "val")
    values = {(r["dataset"]["name"], r["dataset"].get("config")): {m["name"]: m["value"] for m in r["metrics"]}
              for r in results(tmp_path)}
    assert values == {("day", None): {"mIoU": 50.0, "aAcc": 75.0, "mAcc": 62.5},
                      ("night", "night"): {"mIoU": 12.5, "aAcc": 75.0, "mAcc": 62.5}}


def test_card_names_a_class_subset_average(tmp_path):
    from layerseg_merge.eval.card_results import add_eval_result

    add_eval_result(tmp_path, SEMANTIC, "cityscapes:/c", "val")
    add_eval_result(tmp_path, SEMANTIC | {"mIoU": 0.6, "classes": ["road"] * 16}, "cityscapes:/c", "val")
    metrics = [(m["name"], m["value"]) for r in results(tmp_path) for m in r["metrics"]]
    assert ("mIoU", 50.0) in metrics and ("mIoU16", 60.0) in metrics and ("mAcc16", 62.5) in metrics


def test_recalibration_is_written_into_the_card_and_old_results_dropped(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    assert CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "merged")]).exit_code == 0
    data = semantic_folder(tmp_path / "data", count=3)
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "merged"), "--data", f"folder:{data}", "--workers",
                                       "0", "--card"])
    assert result.exit_code == 0, result.output
    before = (tmp_path / "merged" / "README.md").read_text()
    result = CliRunner().invoke(main, ["recalibrate", str(tmp_path / "merged"), "--data", f"images:{data / 'images'}",
                                       "--out", str(tmp_path / "bn"), "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "merged" / "README.md").read_text() == before  # the input is untouched
    metadata, body = card(tmp_path / "bn")
    assert "model-index" not in metadata and metadata["pipeline_tag"] == "image-segmentation"
    section = body[body.index("## BatchNorm recalibration"):]
    assert f"on 3 images of `images:{data / 'images'}`, in 1 batch;" in section and "split" not in section
    assert "The 3 evaluation metrics this card held (model-index) described the weights before" in section
    assert "## Recipe" in body
    config = json.loads((tmp_path / "bn" / "config.json").read_text())["layerseg_recalibrated"]
    assert config["split"] is None and config["images"] == 3


def test_merge_recalibrate_describes_the_recalibration_in_the_card(tmp_path, segformers):
    recipe = write_recipe(tmp_path / "r.yaml", segformers, segformers[0])
    data = semantic_folder(tmp_path / "data", count=2)
    result = CliRunner().invoke(main, ["merge", str(recipe), str(tmp_path / "merged"), "--recalibrate",
                                       f"folder:{data}", "--recalibrate-images", "1"])
    assert result.exit_code == 0, result.output
    metadata, body = card(tmp_path / "merged")
    assert "layerwise_seg" in metadata["tags"] and "model-index" not in metadata
    assert f"on 1 image of `folder:{data}`, in 1 batch;" in body and "evaluation metric" not in body


def test_a_second_recalibration_replaces_the_first_section(tmp_path):
    from layerseg_merge.eval.card_results import add_eval_result
    from layerseg_merge.models.card import note_recalibration

    (tmp_path / "README.md").write_text("---\ntags: [x]\n---\n# m\n\n## Usage\n\ntext\n")
    add_eval_result(tmp_path, SEMANTIC, "cityscapes:/c", "val")
    note_recalibration(tmp_path, "cityscapes:/c", "train", 8, 1)
    note_recalibration(tmp_path, "acdc:/a,night", "val", 16, 2)
    metadata, body = card(tmp_path)
    assert metadata["tags"] == ["x"] and "model-index" not in metadata
    assert body.count("## BatchNorm recalibration") == 1 and "## Usage\n\ntext" in body
    assert "on 16 images of `acdc:/a,night` (split `val`), in 2 batches;" in body
    assert "evaluation metric" not in body  # the second one found none left to remove
    assert note_recalibration(tmp_path / "nothing", "images:/x", None, 1, 1) is None


def test_a_merge_of_imported_mmseg_models_does_not_claim_transformers(tmp_path):
    """transformers would load it as a SegFormer with a random head and no error: the card says how to run it."""
    from conftest import run_in_process
    from mmseg_reference import import_, small_checkpoint
    from transformers import AutoModelForSemanticSegmentation

    hrda, daformer = (import_(small_checkpoint(tmp_path, kind, seed=seed)[0], tmp_path / kind)[0]
                      for kind, seed in (("hrda", 1), ("daformer", 2)))
    for anchor in (hrda, daformer):
        out = run_in_process(write_recipe(tmp_path / "r.yaml", [hrda, daformer], anchor), tmp_path / f"m-{anchor.name}")
        metadata, body = card(out)
        assert metadata["library_name"] == "layerseg-merge" and metadata["pipeline_tag"] == "image-segmentation"
        architecture = json.loads((out / "config.json").read_text())["architectures"][0]
        section = body[body.index("## How to load it"):body.index("## Models merged")]
        assert f"`{architecture}` in `config.json`" in section and "randomly initialised" in section
        assert f"layerseg eval path/to/{out.name} --data" in section
        assert f"layerseg export mmseg path/to/{out.name} {out.name}.pth" in section
    # what the card warns about: transformers loads the backbone and leaves the head random, without an error
    _, loading = AutoModelForSemanticSegmentation.from_pretrained(out, output_loading_info=True)
    assert any(key.startswith("decode_head.") for key in loading["unexpected_keys"])
    assert any(key.startswith("decode_head.") for key in loading["missing_keys"])


def test_eval_card_of_an_imported_model_does_not_claim_transformers(tmp_path, segformers):
    from mmseg_reference import import_, small_checkpoint

    from layerseg_merge.eval.card_results import add_eval_result

    imported, _ = import_(small_checkpoint(tmp_path, "daformer")[0], tmp_path / "daformer")
    add_eval_result(imported, SEMANTIC, "cityscapes:/c", "val")
    metadata, body = card(imported)
    assert metadata["library_name"] == "layerseg-merge" and "## How to load it" in body
    plain = tmp_path / "plain"
    shutil.copytree(segformers[0], plain)
    add_eval_result(plain, SEMANTIC, "cityscapes:/c", "val")
    metadata, body = card(plain)
    assert metadata["library_name"] == "transformers" and "How to load it" not in body


def test_a_transformers_anchor_keeps_transformers_among_imported_inputs(tmp_path):
    from conftest import run_in_process
    from helpers import save_model, tiny_segformer_config
    from mmseg_reference import import_, small_checkpoint
    from transformers import SegformerForSemanticSegmentation

    config = tiny_segformer_config(hidden_sizes=[8, 16, 40, 64], num_attention_heads=[1, 2, 5, 8], num_labels=19)
    segformer = save_model(SegformerForSemanticSegmentation, config, tmp_path / "segformer", seed=1)  # MiT of SMALL
    hrda, _ = import_(small_checkpoint(tmp_path, "hrda", seed=2)[0], tmp_path / "hrda")
    out = run_in_process(write_recipe(tmp_path / "r.yaml", [segformer, hrda], segformer), tmp_path / "out")
    metadata, body = card(out)
    assert metadata["library_name"] == "transformers" and "How to load it" not in body
