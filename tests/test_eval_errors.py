"""`layerseg eval` on bad input: one line naming the file and what to do (issue 18, eval side)."""

import errno
import json
import pickle
import shutil
import zlib

import pytest
import torch
from click.testing import CliRunner
from eval_data import semantic_folder
from helpers import assert_one_line_error

from layerseg_merge.cli import main

FAKE_REPORT = {"mIoU": 0.5, "aAcc": 0.5, "mAcc": 0.5, "per_class": {"road": {"IoU": 0.5, "Acc": 0.5}},
               "timing": {"images": 1, "seconds": 1.0, "startup_seconds": 0.0, "device": "cpu"}}


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture()
def no_evaluation(monkeypatch):
    """Refusals must come before the work: evaluate() fails the test if it runs."""
    import layerseg_merge.eval.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: pytest.fail("evaluation ran"))


@pytest.fixture()
def fake_evaluation(monkeypatch):
    import layerseg_merge.eval.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: json.loads(json.dumps(FAKE_REPORT)))


def test_out_and_plot_naming_one_file_are_refused(tmp_path, segformers, no_evaluation):
    data = semantic_folder(tmp_path / "data", count=1)
    report = tmp_path / "r.json"
    line = assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--out", report,
                                     "--plot", report), "--out and --plot name the same file", str(report),
                                 f"--plot {tmp_path / 'r-chart.png'}")
    assert "chart would replace the report" in line and not report.exists()
    report.write_text("{}")
    (tmp_path / "link.json").symlink_to(report)  # the same file under another name
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--out", report,
                              "--plot", tmp_path / "link.json"), "--out and --plot name the same file")
    assert report.read_text() == "{}"
    assert_one_line_error(run("score", "semantic", "--gt", data / "labels", "--pred", data / "labels",
                              "--num-classes", "5", "--out", report, "--plot", report), "name the same file")


@pytest.mark.parametrize("value", ["32,0", "0,0", "0,16", "16,32", "-8,4"])
def test_slide_needs_positive_windows_without_gaps(tmp_path, segformers, no_evaluation, value):
    data = semantic_folder(tmp_path / "data", count=1)
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--slide", value),
                          f"--slide {value}: CROP and STRIDE must be positive and STRIDE at most CROP", "e.g. 512,341")


def test_acdc_conditions_are_not_input_paths(tmp_path, segformers, fake_evaluation, monkeypatch):
    from layerseg_merge.eval.datasets import input_paths

    assert input_paths("acdc:/data/acdc,night,fog") == ("/data/acdc",)
    assert input_paths("coco-panoptic:/i,/a.json,/p") == ("/i", "/a.json", "/p")
    assert input_paths("folder:/data/a,b") == ("/data/a,b",)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acdc").mkdir()
    result = run("eval", segformers[0], "--data", "acdc:acdc,night", "--out", "night/r.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "night" / "r.json").read_text())["mIoU"] == 0.5
    assert_one_line_error(run("eval", segformers[0], "--data", "acdc:acdc,night", "--out", "acdc/r.json"),
                          "would be written inside the input acdc")


def test_an_empty_dataset_is_named(tmp_path, segformers):
    for folder in ("images/city", "labels/city"):
        (tmp_path / "empty" / folder).mkdir(parents=True)
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{tmp_path / 'empty'}", "--workers", "0"),
                          f"{tmp_path / 'empty' / 'images'}: no images (.png, .jpg", "a folder dataset has images/")


def test_a_limit_of_zero_images_is_refused(tmp_path, segformers):
    from layerseg_merge.eval.evaluate import evaluate
    from layerseg_merge.eval.options import DataOptions

    data = semantic_folder(tmp_path / "data", count=2)
    with pytest.raises(ValueError, match="a limit of 0 images leaves none to use; give at least 1"):
        evaluate(segformers[0], DataOptions(f"folder:{data}", limit=0, workers=0), progress=False)


class Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_model_whose_weights_would_run_a_command_is_refused_naming_the_file(tmp_path, segformers):
    model = tmp_path / "model"
    shutil.copytree(segformers[0], model)
    (model / "model.safetensors").unlink()
    torch.save({"decode_head.classifier.weight": torch.zeros(1), "x": Shell(tmp_path / "ran")},
               model / "pytorch_model.bin")
    data = semantic_folder(tmp_path / "data", count=1)
    line = assert_one_line_error(run("eval", model, "--data", f"folder:{data}", "--workers", "0"),
                                 f"{model / 'pytorch_model.bin'}: refused", "would call posix.system",
                                 "nothing was run")
    assert "Weights only load failed" not in line and len(line) - len(str(model)) < 250
    assert not (tmp_path / "ran").exists()


def _png_bomb(path, side=14000):
    """A valid grey PNG of side x side zeros (196 M pixels, over Pillow's error limit) in about 200 KB."""
    def chunk(kind, body):
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    compressor, row, parts = zlib.compressobj(9), bytes(side + 1), []
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("where,workers", [("image", "0"), ("image", "1"), ("label", "1")])
def test_a_decompression_bomb_is_named_without_a_worker_traceback(tmp_path, segformers, where, workers):
    """Images go through Pillow, grey labels through the fast PNG decoder first: both refuse the bomb."""
    data = semantic_folder(tmp_path / "data", count=2)
    victim = sorted((data / f"{where}s").rglob("*.png"))[0]
    _png_bomb(victim)
    line = assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--workers", workers),
                                 f"{victim}: refused", "decompression bomb", "remove it from the dataset")
    assert "worker" not in line and "DecompressionBombError" not in line
    if where == "label":
        assert_one_line_error(run("score", "semantic", "--gt", data / "labels", "--pred", data / "labels",
                                  "--num-classes", "5", "--workers", "1"), f"{victim}: refused", "decompression bomb")


@pytest.mark.parametrize("named", [False, True])
def test_a_full_disk_while_writing_the_report_names_it(tmp_path, segformers, fake_evaluation, monkeypatch, named):
    import layerseg_merge.io.output as output_module

    class FullDisk:
        def __init__(self, path, mode):
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):  # a write() on a full disk; open() gives the temporary's name
            raise OSError(errno.ENOSPC, "No space left on device", *([str(self.path)] if named else []))

    monkeypatch.setattr(output_module, "open", FullDisk, raising=False)
    data = semantic_folder(tmp_path / "data", count=1)
    report = tmp_path / "reports" / "r.json"
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--out", report),
                          f"evaluation failed: no space left on the device while writing {report}; free some space")
    assert not report.exists() and list((tmp_path / "reports").iterdir()) == []
    assert_one_line_error(run("eval", segformers[0], "--data", f"folder:{data}", "--plot", tmp_path / "bars.png"),
                          f"while writing {tmp_path / 'bars.png'}; free some space")


def test_the_pickle_scan_names_only_foreign_globals(tmp_path):
    """The global scan names nothing in an ordinary weights file (legacy and zip formats)."""
    from layerseg_merge.io.checkpoint import pickle_globals

    torch.save({"w": torch.zeros(2)}, tmp_path / "zip.pth")
    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for name in ("zip.pth", "legacy.pth"):
        assert set(pickle_globals(tmp_path / name)) <= {"torch._utils._rebuild_tensor_v2", "torch.FloatStorage",
                                                        "collections.OrderedDict"}
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": Shell(tmp_path / "ran")}, protocol=2))
    assert pickle_globals(tmp_path / "plain.pkl") == ["posix.system"]
