"""The sizes of an imported model's test pipeline are bounded, at import and at eval; a malformed `--config` is named.

A size no model runs at (an img_scale of 1e9, a window of 100000 px) used to be stored without a word and
made `layerseg eval` allocate until the kernel killed it. Every size goes through one check
(`size_problem`): whole pixels, each side at most 16384, a network input of at most 2^26 px. Configs
are small JSON files in the layout of the released ones (mmcv's Config dumped), built here.
"""

import json
import shutil

import numpy as np
import pytest
from helpers import assert_one_line_error
from mmseg_fixtures import TINY_HEADS, daformer_checkpoint, save_checkpoint
from mmseg_reference import SMALL, import_, run, small_checkpoint
from PIL import Image

from layerseg_merge.eval.mmseg_pipeline import MAX_PIXELS, MAX_SIDE, size_problem

SIDE = "must be a whole number of pixels from 1 to 16384"
SIDES = f"each side {SIDE}"
TWO = "must be 2 whole numbers of pixels"
AREA = "px is more than layerseg runs (67108864 px, 8192 x 8192)"
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
HRDA_MODEL = {"type": "HRDAEncoderDecoder", "scales": [1, 0.5], "hr_crop_size": [32, 32], "hr_slide_overlapping": True,
              "test_cfg": {"mode": "slide", "crop_size": [64, 64], "stride": [32, 32]}}


def config_json(path, img_scale=(64, 32), model=None, transforms=None, **top):
    """A test config as the released checkpoints ship it, scaled down; ``top`` replaces top-level keys."""
    transforms = transforms if transforms is not None else [
        {"type": "Resize", "keep_ratio": True}, {"type": "RandomFlip"},
        {"type": "Normalize", "mean": MEAN, "std": STD, "to_rgb": True}]
    config = {"model": model if model is not None else {"type": "EncoderDecoder", "test_cfg": {"mode": "whole"}},
              "data": {"test": {"type": "CityscapesDataset", "pipeline": [
                  {"type": "LoadImageFromFile"},
                  {"type": "MultiScaleFlipAug", "img_scale": img_scale, "flip": False, "transforms": transforms}]}},
              **top}
    path.write_text(json.dumps(config))
    return path


def refused_import(tmp_path, kind, config_text, *fragments):
    """``layerseg import mmseg --config`` with ``config_text`` fails in one line naming the file; nothing written."""
    checkpoint, _ = small_checkpoint(tmp_path, kind, container="published")
    path = tmp_path / "cfg.json"
    path.write_text(config_text)
    line = assert_one_line_error(run("import", "mmseg", checkpoint, tmp_path / "model", "--config", path),
                                 f"{path}: ", *fragments)
    assert not (tmp_path / "model").exists()
    return line


# ------------------------------------------------------------------------------------------ the check


def test_the_bounds_and_what_they_keep_valid():
    assert (MAX_SIDE, MAX_PIXELS) == (16384, 2**26)
    for valid in ([1, 1], [64, 32], [1024, 512], [2048, 1024], [7680, 4320], [16384, 4096], (960, 540)):
        assert size_problem(valid) is None, valid
    assert size_problem(8192, sides=1) is None and size_problem(16384, sides=1, window=False) is None
    for value, problem in (([16384, 4097], AREA), ([16385, 1], SIDE), ([0, 5], SIDE), ([-64, 32], SIDE),
                           ([True, 32], SIDE), ([64.0, 32], SIDE), ([float("nan"), 32], SIDE), (["64", 32], SIDE),
                           ([64], TWO), ([64, 32, 3], TWO), (64, TWO), (None, TWO), ({"w": 64}, TWO),
                           (10**100, TWO)):
        assert problem in size_problem(value), value
    assert AREA in size_problem(8193, sides=1)  # a square window is a network input
    assert size_problem(8193, sides=1, window=False) is None  # a stride is not
    assert SIDE in size_problem(False, sides=1)


# ------------------------------------------------------------------------------------------ import


@pytest.mark.parametrize("img_scale,shown,problem", [
    ([1000000000, 512], "[1000000000, 512]", SIDES),
    ([1e9, 512], "[1000000000.0, 512]", SIDES),
    (1e9, "1000000000.0", TWO),
    ([0, 512], "[0, 512]", SIDES),
    ([-64, 32], "[-64, 32]", SIDES),
    ([True, 32], "[True, 32]", SIDES),
    (["64", 32], "['64', 32]", SIDES),
    ([float("nan"), 32], "[nan, 32]", SIDES),
    ([64], "[64]", TWO),
    ([64, 32, 3], "[64, 32, 3]", TWO),
    ([16384, 8192], "[16384, 8192]", f"a network input of 134217728 {AREA}"),
    ([100000, 100000], "[100000, 100000]", SIDES),
])
def test_a_config_img_scale_out_of_bounds_is_refused_at_import(tmp_path, img_scale, shown, problem):
    config = config_json(tmp_path / "cfg.json", img_scale).read_text()
    line = refused_import(tmp_path, "daformer", config, f"data.test.pipeline MultiScaleFlipAug img_scale {shown}: "
                          f"{problem}", "or override it with --test-scale W,H")
    assert line.count(":") < 12  # one line, not a dump


@pytest.mark.parametrize("change,fragment", [
    (lambda m: m["test_cfg"].update(crop_size=[100000, 100000]),
     f"model.test_cfg.crop_size [100000, 100000]: {SIDES}"),
    (lambda m: m["test_cfg"].update(crop_size=16384, stride=16384),
     f"model.test_cfg.crop_size 16384: a network input of 268435456 {AREA}"),
    (lambda m: m["test_cfg"].update(crop_size=[1e9, 1e9]),
     f"model.test_cfg.crop_size [1000000000.0, 1000000000.0]: {SIDES}"),
    (lambda m: m["test_cfg"].update(stride=[0, 0]), f"model.test_cfg.stride [0, 0]: {SIDES}"),
    (lambda m: m["test_cfg"].update(stride=[96, 96]), "model.test_cfg.stride 96 is more than model.test_cfg.crop_size "
                                                      "64: the windows would leave pixels out"),
    (lambda m: m.update(hr_crop_size=[100000, 100000]), f"model.hr_crop_size [100000, 100000]: {SIDES}"),
    (lambda m: m.update(hr_crop_size=True), f"model.hr_crop_size True: {TWO}"),
    (lambda m: m.update(hr_crop_size=1), f"model.hr_crop_size / 2 (hr_slide_overlapping) 0: {SIDE}"),
    (lambda m: m.update(scales=[1, "a"]), "model.scales [1, 'a']: HRDA's scales must be two numbers"),
    (lambda m: m.update(scales=[1, float("nan")]), "model.scales [1, nan]: HRDA's scales must be two numbers"),
    (lambda m: m.update(scales=[1, True]), "model.scales [1, True]: HRDA's scales must be two numbers"),
    (lambda m: m.update(scales=[1, 0]), "HRDA scales [0, 1]: layerseg runs two scales, the larger 1 and the other "
                                        "between 0 and 1"),
    (lambda m: m.update(scales=0.5), "model.scales must be a list; got 0.5"),
    (lambda m: m.update(hr_slide_overlapping="yes"), "model.hr_slide_overlapping must be true or false; got 'yes'"),
    (lambda m: m["test_cfg"].update(mode=5), "model.test_cfg.mode must be a string; got 5"),
])
def test_hrda_windows_and_scales_out_of_bounds_are_refused_at_import(tmp_path, change, fragment):
    model = json.loads(json.dumps(HRDA_MODEL))
    change(model)
    refused_import(tmp_path, "hrda", config_json(tmp_path / "cfg.json", (128, 64), model).read_text(), fragment,
                   "correct it in the config")


def test_the_bounds_keep_the_released_settings_and_the_largest_valid_ones(tmp_path):
    checkpoint, _ = small_checkpoint(tmp_path, "hrda", container="published")
    model = {**HRDA_MODEL, "hr_crop_size": [512, 512],
             "test_cfg": {"mode": "slide", "crop_size": [8192, 8192], "stride": [8192, 8192]}}
    out, _ = import_(checkpoint, tmp_path / "model", "--config", config_json(tmp_path / "cfg.json", [16384, 4096],
                                                                                model))
    settings = json.loads((out / "config.json").read_text())["layerseg_mmseg"]
    assert settings["test_pipeline"]["img_scale"] == [16384, 4096]
    assert settings["inference"] == {"lr_scale": 0.5, "hr_crop": 512, "hr_stride": 256, "crop": 8192, "stride": 8192}


@pytest.mark.parametrize("scale", ["99999999999,1", "100000,100000", "16384,8192", "0,5"])
def test_a_test_scale_out_of_bounds_is_refused_before_the_checkpoint_is_read(tmp_path, scale):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not read: --test-scale is checked first")
    line = assert_one_line_error(run("import", "mmseg", garbage, tmp_path / "model", "--test-scale", scale),
                                 f"--test-scale {scale}: ", "give W,H in pixels, e.g. 1024,512")
    assert (AREA if scale == "16384,8192" else SIDES) in line and "garbage" not in line
    assert not (tmp_path / "model").exists()


def test_the_meta_config_is_bounded_and_named_by_its_checkpoint(tmp_path):
    data = daformer_checkpoint("daformer", variant=SMALL, sizes=TINY_HEADS)
    data["meta"]["config"] = ("data = dict(test=dict(pipeline=[dict(type='MultiScaleFlipAug', "
                              "img_scale=(1000000000, 512), transforms=[dict(type='Resize', keep_ratio=True)])]))\n")
    checkpoint = save_checkpoint(data, tmp_path / "huge.pth")
    assert_one_line_error(run("import", "mmseg", checkpoint, tmp_path / "model"),
                          f"{checkpoint}: meta config: data.test.pipeline MultiScaleFlipAug img_scale "
                          f"(1000000000, 512): {SIDES}; pass the JSON config released with the checkpoint (--config "
                          "FILE), or override it with --test-scale W,H")
    out, _ = import_(checkpoint, tmp_path / "model", "--test-scale", "64,32")  # the override replaces it
    assert json.loads((out / "config.json").read_text())["layerseg_mmseg"]["test_pipeline"]["img_scale"] == [64, 32]


# ------------------------------------------------------------------------------------------ malformed configs


@pytest.mark.parametrize("text,fragment", [
    ("[" * 100000 + "]" * 100000, "nested more deeply than Python's parsers go (RecursionError"),
    ('{"a": ' * 100000 + "1" + "}" * 100000, "nested more deeply than Python's parsers go (RecursionError"),
    ("x = " + "-" * 100000 + "1", "nested more deeply than Python's parsers go (MemoryError"),
    ("x = " + "[" * 100000 + "]" * 100000, "neither JSON nor a Python config"),
    ('{"model": {},}', "neither JSON nor a Python config (JSON: Expecting property name enclosed in double quotes"),
    ('"a string"', "not a config (expected an object): it holds a str"),
    ("5", "not a config (expected an object): it holds a int"),
    (json.dumps({"model": 5}), "model must be an object (dict); got 5"),
    (json.dumps({"model": {"test_cfg": [1]}}), "model.test_cfg must be an object (dict); got [1]"),
    (json.dumps({"data": []}), "data must be an object (dict); got []"),
    (json.dumps({"data": {"test": "x"}}), "data.test must be an object (dict); got 'x'"),
    (json.dumps({"data": {"test": {"pipeline": "x"}}}), "data.test.pipeline must be a list; got 'x'"),
    (json.dumps({"data": {"test": {"pipeline": [5]}}}), "data.test.pipeline[0] must be an object (dict) with a type"),
    (json.dumps({"test_pipeline": {"type": "Resize"}}), "test_pipeline must be a list; got {'type': 'Resize'}"),
])
def test_malformed_configs_name_the_file_and_the_key(tmp_path, text, fragment):
    line = refused_import(tmp_path, "daformer", text, fragment, "pass the JSON config released with the checkpoint")
    assert len(line) < 400


@pytest.mark.parametrize("transforms,fragment", [
    ("x", "data.test.pipeline MultiScaleFlipAug transforms must be a list; got 'x'"),
    ([{"type": "Resize", "keep_ratio": "no"}], "data.test.pipeline Resize keep_ratio must be true or false; got 'no'"),
    ([{"type": "Normalize", "std": STD}], "data.test.pipeline Normalize mean None: must be 3 finite numbers"),
    ([{"type": "Normalize", "mean": MEAN, "std": [1, 0, 1]}],
     "data.test.pipeline Normalize std [1, 0, 1]: must be 3 finite numbers above 0"),
    ([{"type": "Normalize", "mean": [float("nan"), 0, 0], "std": STD}], "Normalize mean [nan, 0, 0]: must be 3 finite"),
    ([{"type": "Normalize", "mean": MEAN, "std": STD, "to_rgb": "yes"}],
     "data.test.pipeline Normalize to_rgb must be true or false; got 'yes'"),
])
def test_malformed_pipeline_steps_name_the_file_and_the_key(tmp_path, transforms, fragment):
    refused_import(tmp_path, "daformer", config_json(tmp_path / "cfg.json", transforms=transforms).read_text(),
                   fragment, "correct it in the config")


# ------------------------------------------------------------------------------------------ eval


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A small DAFormer and HRDA model directory, and an 8x8 labelled image to evaluate on."""
    tmp = tmp_path_factory.mktemp("bounds")
    dirs = {}
    for kind, options in (("daformer", ("--test-scale", "64,32")),
                          ("hrda", ("--config", config_json(tmp / "hrda.json", (128, 64), HRDA_MODEL)))):
        checkpoint, _ = small_checkpoint(tmp, kind, container="published")
        dirs[kind], _ = import_(checkpoint, tmp / kind, *options)
    folder = tmp / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)).save(folder / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "labels" / "a.png")
    return dirs, folder


@pytest.mark.parametrize("kind,change,fragment", [
    ("daformer", lambda s: s["test_pipeline"].update(img_scale=[100000, 100000]),
     f"layerseg_mmseg.test_pipeline.img_scale [100000, 100000]: {SIDES}"),
    ("daformer", lambda s: s["test_pipeline"].update(img_scale=[16384, 8192]),
     f"layerseg_mmseg.test_pipeline.img_scale [16384, 8192]: a network input of 134217728 {AREA}"),
    ("daformer", lambda s: s["test_pipeline"].update(img_scale=[True, 32]),
     f"layerseg_mmseg.test_pipeline.img_scale [True, 32]: {SIDES}"),
    ("daformer", lambda s: s["test_pipeline"].update(img_scale=[64, 32, 1]),
     f"layerseg_mmseg.test_pipeline.img_scale [64, 32, 1]: {TWO}"),
    ("daformer", lambda s: s.update(inference={"crop": 100000, "stride": 100000}),
     f"layerseg_mmseg.inference.crop 100000: {SIDE}"),
    ("daformer", lambda s: s.update(inference={"crop": True, "stride": 1}),
     f"layerseg_mmseg.inference.crop True: {SIDE}"),
    ("daformer", lambda s: s.update(inference={"crop": 32, "stride": 48}),
     "layerseg_mmseg.inference.stride 48 is more than layerseg_mmseg.inference.crop 32: the windows would leave"),
    ("hrda", lambda s: s["inference"].update(hr_crop=100000), f"layerseg_mmseg.inference.hr_crop 100000: {SIDE}"),
    ("hrda", lambda s: s["inference"].update(crop=16384, stride=16384),
     f"layerseg_mmseg.inference.crop 16384: a network input of 268435456 {AREA}"),
    ("hrda", lambda s: s["inference"].update(hr_stride=64),
     "layerseg_mmseg.inference.hr_stride 64 is more than layerseg_mmseg.inference.hr_crop 32"),
])
def test_an_edited_config_json_out_of_bounds_is_refused_at_eval(imported, tmp_path, kind, change, fragment):
    dirs, folder = imported
    model = tmp_path / "model"
    shutil.copytree(dirs[kind], model)
    config = json.loads((model / "config.json").read_text())
    change(config["layerseg_mmseg"])
    (model / "config.json").write_text(json.dumps(config))
    result = run("eval", model, "--data", f"folder:{folder}", "--device", "cpu", "--workers", "0")
    assert_one_line_error(result, f"{model / 'config.json'}: {fragment}", "edit config.json or import the checkpoint "
                          "again")
