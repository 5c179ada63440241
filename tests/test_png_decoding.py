"""PNG decoding: the kornia-rs fast path gives Pillow's arrays exactly, and every other file goes to Pillow."""

import json
import shutil
import struct
import zlib

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


def blocks(rng, shape, high, size=8):
    """Random values in blocks of ``size`` x ``size`` pixels: they compress as label and panoptic PNGs do."""
    cells = rng.integers(0, high, (-(-shape[0] // size), -(-shape[1] // size), *shape[2:]), dtype=np.int64)
    return cells.repeat(size, 0).repeat(size, 1)[:shape[0], :shape[1]]


def write_kinds(root):
    """PNGs (and a JPEG) of the kinds datasets use, written by Pillow; name -> (path, fast path expected)."""
    rng = np.random.default_rng(0)
    rgb = blocks(rng, (37, 53, 3), 256).astype(np.uint8)
    grey = blocks(rng, (37, 53), 256).astype(np.uint8)
    ids = blocks(rng, (23, 31), 2**24)
    noise = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    kinds = {
        "rgb": (Image.fromarray(rgb), {}, True),
        "rgb, level 0": (Image.fromarray(rgb), {"compress_level": 0}, False),  # stored: costly to check, as photos
        "rgb noise (a photo)": (Image.fromarray(noise), {}, False),
        "rgb, optimised": (Image.fromarray(rgb), {"optimize": True}, True),
        "rgb, tRNS": (Image.fromarray(rgb), {"transparency": (1, 2, 3)}, True),
        "panoptic ids": (Image.fromarray(id_to_rgb(ids)), {}, True),
        "one pixel": (Image.fromarray(rgb[:1, :1]), {}, False),  # its zlib stream is longer than its pixels
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


def test_panoptic_ids_take_every_byte_of_every_pixel(tmp_path, decoder, monkeypatch):
    fast = decoder("auto")
    decoded = []
    original = fast.decode_image_png_u8
    monkeypatch.setattr(fast, "decode_image_png_u8", lambda data, *a: decoded.append(data) or original(data, *a))
    ids = np.arange(1, 7 * 9 + 1, dtype=np.int64).reshape(7, 9) * 263_167 % 2**24  # all three channels vary
    ids = ids.repeat(4, 0).repeat(4, 1)  # in blocks, so that it compresses as panoptic PNGs do
    ids[-1, -1] = 2**24 - 1  # the last pixel is read apart
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "ids.png")
    got = read_panoptic_ids(tmp_path / "ids.png")
    assert decoded and got.dtype == np.int32 and np.array_equal(got, ids)


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


def chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    """A PNG chunk (with its own CRC unless ``crc`` says otherwise)."""
    return struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(kind + body) if crc is None
                                                                      else crc)


def corrupt_pngs() -> dict[str, bytes]:
    """A compressible RGB PNG (fast path) intact and damaged in the ways files get damaged or badly written."""
    rgb = blocks(np.random.default_rng(1), (37, 53, 3), 256).astype(np.uint8)
    rows = b"".join(b"\x00" + row.tobytes() for row in rgb)  # filter type 0 for each row
    stream = zlib.compress(rows)
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 53, 37, 8, 2, 0, 0, 0))
    text, end = chunk(b"tEXt", b"k\x00v"), chunk(b"IEND", b"")
    stored = bytearray(zlib.compress(rows, 0))
    stored[100] ^= 1  # a pixel changed inside the stream, its chunk's CRC computed afterwards: only Adler-32 sees it

    def png(*chunks: bytes) -> bytes:
        return images._PNG_SIGNATURE + b"".join(chunks)

    return {
        "intact": png(header, chunk(b"IDAT", stream), end),
        "two IDAT chunks": png(header, chunk(b"IDAT", stream[:50]), chunk(b"IDAT", stream[50:]), end),
        "bad Adler-32": png(header, chunk(b"IDAT", stream[:-4] + bytes(b ^ 0xFF for b in stream[-4:])), end),
        "stream changed, CRC recomputed": png(header, chunk(b"IDAT", bytes(stored)), end),
        "stream without its Adler-32": png(header, chunk(b"IDAT", stream[:-4]), end),
        "stream cut short": png(header, chunk(b"IDAT", stream[:len(stream) // 2]), end),
        "rows missing": png(header, chunk(b"IDAT", zlib.compress(rows[:-160])), end),
        "rows to spare": png(header, chunk(b"IDAT", zlib.compress(rows + rows[:160])), end),
        "bytes after the stream": png(header, chunk(b"IDAT", stream + b"extra"), end),
        "bad zlib header": png(header, chunk(b"IDAT", bytes([stream[0], stream[1] ^ 1]) + stream[2:]), end),
        "bad filter type": png(header, chunk(b"IDAT", zlib.compress(b"\x07" + rows[1:])), end),
        "bad IHDR CRC": png(header[:-4] + b"\0\0\0\0", chunk(b"IDAT", stream), end),
        "bad IDAT CRC": png(header, chunk(b"IDAT", stream, crc=1), end),
        "bad CRC before IDAT": png(header, chunk(b"tEXt", b"k\x00v", crc=1), chunk(b"IDAT", stream), end),
        "bad CRC after IDAT": png(header, chunk(b"IDAT", stream), chunk(b"tEXt", b"k\x00v", crc=1), end),
        "bad IEND CRC": png(header, chunk(b"IDAT", stream), chunk(b"IEND", b"", crc=1)),
        "tRNS of the wrong length": png(header, chunk(b"tRNS", b"\0\1"), chunk(b"IDAT", stream), end),
        "unknown critical chunk": png(header, chunk(b"ABCD", b"?"), chunk(b"IDAT", stream), end),
        "IDAT, tEXt, IDAT": png(header, chunk(b"IDAT", stream[:50]), text, chunk(b"IDAT", stream[50:]), end),
        "cut inside IDAT": png(header, chunk(b"IDAT", stream), end)[:-30],
        "no IEND": png(header, chunk(b"IDAT", stream)),
        "a chunk after IDAT cut short": png(header, chunk(b"IDAT", stream)) + struct.pack(">I", 99) + b"tEXtk\0",
        "garbage after IEND": png(header, chunk(b"IDAT", stream), end, b"garbage"),
    }


def test_both_decoders_give_the_same_answer_on_corrupt_pngs(tmp_path, decoder, monkeypatch):
    """Pillow's answer, an array or a refusal, whichever decoder is chosen: the fast path takes only files Pillow
    reads without complaint (kornia-rs alone accepted a bad Adler-32, a bad CRC before the image data, ...)."""
    paths = {}
    for index, (name, data) in enumerate(corrupt_pngs().items()):
        paths[name] = tmp_path / f"case{index}.png"
        paths[name].write_bytes(data)
    decoder("pillow")
    expected = {name: readings(path) for name, path in paths.items()}
    fast = decoder("auto")
    decoded = []
    original = fast.decode_image_png_u8
    monkeypatch.setattr(fast, "decode_image_png_u8", lambda data, *a: decoded.append(data) or original(data, *a))
    for name, path in paths.items():
        decoded.clear()
        got = readings(path)
        assert decoded or name not in ("intact", "two IDAT chunks"), name  # intact files take the fast path
        for reader, value in expected[name].items():
            if isinstance(value, str):
                assert isinstance(got[reader], str) and got[reader] == value, (name, reader, got[reader])
            else:
                assert isinstance(got[reader], np.ndarray) and np.array_equal(got[reader], value), (name, reader)
    refused = {name for name, result in expected.items() if isinstance(result["image"], str)}
    assert {"bad Adler-32", "stream changed, CRC recomputed", "bad CRC before IDAT"} <= refused
