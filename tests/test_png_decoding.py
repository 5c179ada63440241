"""PNG decoding: the kornia-rs fast path gives Pillow's arrays exactly, and every other file goes to Pillow."""

import json
import shutil

import numpy as np
import pytest
from eval_data import coco_panoptic, id_to_rgb, semantic_folder
from PIL import Image

from layerseg_merge.eval import images
from layerseg_merge.eval.images import DatasetError, read_image, read_label, read_panoptic_ids


@pytest.fixture()
def decoder(monkeypatch):
    """Switches LAYERSEG_PNG_DECODER for the rest of the test; the choice is read afresh."""

    def use(choice: str):
        monkeypatch.setenv(images.DECODER_VARIABLE, choice)
        images.png_decoder.cache_clear()
        return images.png_decoder()

    yield use
    images.png_decoder.cache_clear()
    monkeypatch.undo()
    images.png_decoder.cache_clear()


def write_kinds(root):
    """PNGs (and a JPEG) of the kinds datasets use, written by Pillow; name -> (path, fast path expected)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    ids = rng.integers(0, 2**24, (23, 31))
    kinds = {
        "rgb": (Image.fromarray(rgb), {}, True),
        "rgb, level 0": (Image.fromarray(rgb), {"compress_level": 0}, True),
        "rgb, optimised": (Image.fromarray(rgb), {"optimize": True}, True),
        "rgb, tRNS": (Image.fromarray(rgb), {"transparency": (1, 2, 3)}, True),
        "panoptic ids": (Image.fromarray(id_to_rgb(ids)), {}, True),
        "one pixel": (Image.fromarray(rgb[:1, :1]), {}, True),
        "rgba": (Image.fromarray(np.dstack([rgb, grey])), {}, True),
        "grey": (Image.fromarray(grey), {}, True),
        "grey, tRNS": (Image.fromarray(grey), {"transparency": 7}, True),
        "grey+alpha": (Image.fromarray(grey).convert("LA"), {}, False),
        "palette": (Image.fromarray(rgb).quantize(16), {}, False),
        "palette, tRNS": (Image.fromarray(grey % 20).convert("P"), {"transparency": 3}, False),
        "16-bit grey": (Image.fromarray(grey.astype(np.uint16) * 257), {}, False),
        "1-bit": (Image.fromarray(grey > 128), {}, False),
    }
    out = {}
    for index, (name, (image, options, fast)) in enumerate(kinds.items()):
        path = root / f"kind{index}.png"
        image.save(path, **options)
        out[name] = (path, fast)
    jpeg = root / "photo.jpg"
    Image.fromarray(rgb).save(jpeg)
    out["jpeg"] = (jpeg, False)
    return out


def readings(path):
    """Every reader on one file: the arrays, or the error message."""
    results = {}
    for name, read in (("image", read_image), ("image RGB", lambda p: read_image(p, "RGB")),
                       ("label", read_label), ("panoptic ids", read_panoptic_ids)):
        try:
            results[name] = read(path)
        except DatasetError as error:
            results[name] = str(error)
    return results


def test_the_fast_decoder_gives_pillows_arrays_and_leaves_the_rest_to_pillow(tmp_path, decoder, monkeypatch):
    kinds = write_kinds(tmp_path)
    assert decoder("pillow") is None
    expected = {name: readings(path) for name, (path, _) in kinds.items()}
    fast = decoder("auto")
    assert fast is not None, "kornia-rs (a dependency of this package) is not importable"
    decoded = []
    original = fast.decode_image_png_u8
    monkeypatch.setattr(fast, "decode_image_png_u8", lambda data, *a: decoded.append(data) or original(data, *a))
    for name, (path, fast_path) in kinds.items():
        decoded.clear()
        got = readings(path)
        assert bool(decoded) == fast_path, name
        for reader, value in expected[name].items():
            if isinstance(value, str):
                assert got[reader] == value, (name, reader)
                continue
            assert isinstance(got[reader], np.ndarray), (name, reader, got[reader])
            assert got[reader].dtype == value.dtype and got[reader].shape == value.shape, (name, reader)
            assert np.array_equal(got[reader], value), (name, reader)
        assert got["image"].flags.writeable and got["image RGB"].flags.writeable


def test_panoptic_ids_take_every_byte_of_every_pixel(tmp_path, decoder):
    decoder("auto")
    ids = np.arange(1, 7 * 9 + 1, dtype=np.int64).reshape(7, 9) * 263_167 % 2**24  # all three channels vary
    ids[-1, -1] = 2**24 - 1  # the last pixel is read apart
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "ids.png")
    got = read_panoptic_ids(tmp_path / "ids.png")
    assert got.dtype == np.int32 and np.array_equal(got, ids)


def test_an_unknown_decoder_setting_is_an_error(decoder):
    with pytest.raises(DatasetError, match="LAYERSEG_PNG_DECODER=fastest: use auto, kornia-rs or pillow"):
        decoder("fastest")


def test_a_truncated_png_is_named_by_pillows_error(tmp_path, decoder):
    decoder("auto")
    path = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 7).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match=f"{path}: cannot read image"):
        read_panoptic_ids(path)


def test_scoring_and_eval_datasets_read_the_same_with_either_decoder(tmp_path, decoder):
    from layerseg_merge.eval.datasets import open_dataset
    from layerseg_merge.eval.score import score_panoptic, score_semantic

    data = semantic_folder(tmp_path / "semantic", count=3)
    images_dir, annotations, pngs = coco_panoptic(tmp_path / "panoptic", count=3)
    predictions = tmp_path / "predictions"
    shutil.copytree(pngs, predictions)
    gt = json.loads(annotations.read_text())
    results = {}
    for choice in ("pillow", "auto"):
        decoder(choice)
        semantic = score_semantic(data / "labels", data / "labels", num_classes=5, workers=0, progress=False)
        panoptic = score_panoptic(annotations, pngs, annotations, predictions, workers=0, progress=False)
        dataset = open_dataset(f"folder:{data}", "val", "semantic")
        samples = [dataset[i] for i in range(len(dataset))]
        coco = open_dataset(f"coco-panoptic:{images_dir},{annotations},{pngs}", "val", "panoptic")
        results[choice] = (semantic, panoptic, samples, [coco[i]["panoptic"].numpy() for i in range(len(coco))])
    (s1, p1, d1, c1), (s2, p2, d2, c2) = results["pillow"], results["auto"]
    assert s1 == s2 and s1["mIoU"] == 1.0 and p1 == p2 and p1["All"]["pq"] == 1.0
    assert len(gt["annotations"]) == len(c1) == 3 and all(np.array_equal(a, b) for a, b in zip(c1, c2))
    for a, b in zip(d1, d2):
        assert a["name"] == b["name"] and np.array_equal(a["image"], b["image"])
        assert a["label"].dtype == b["label"].dtype and bool((a["label"] == b["label"]).all())
