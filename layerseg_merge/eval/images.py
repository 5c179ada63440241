"""Reading images, class-index labels and COCO panoptic PNGs into numpy arrays (no torch).

Shared by the datasets of ``layerseg eval`` and by ``layerseg score``, which never imports torch.

8-bit, non-interlaced grey, RGB and RGBA PNGs are decoded by kornia-rs (Rust ``png`` crate, see
``benchmarks/score_speed.py``) where it gives Pillow's answer exactly: only files Pillow would read without
complaint take that path (:func:`_pillow_reads`), so a corrupt file is refused by both. Every other file, every
PNG that decoder refuses, and PNGs that compress poorly (photos: the check costs as much as Pillow's decode)
are read by Pillow. ``LAYERSEG_PNG_DECODER=pillow`` turns the fast path off.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DECODER_VARIABLE = "LAYERSEG_PNG_DECODER"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {0: ("mono", "L"), 2: ("rgb", "RGB"), 6: ("rgba", "RGBA")}  # PNG colour type -> (kornia, Pillow)
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole last chunk: length 0, type, CRC
# The fast path checks the zlib stream by inflating it once more: worth it while the stream is at most this share
# of the rows it holds (label and panoptic PNGs: 1/100 and less); a photo's (1/3 and more) goes to Pillow, which
# decodes it in about the time of that check alone (benchmarks/score_speed.py).
_FAST_STREAM_SHARE = 0.25


class DatasetError(ValueError):
    """A dataset that does not match its layout; names the file and what to do."""


@functools.cache
def png_decoder():
    """kornia-rs' ``io`` module when it decodes PNGs here, else None (Pillow); set by ``LAYERSEG_PNG_DECODER``."""
    choice = os.environ.get(DECODER_VARIABLE, "auto")
    if choice not in ("auto", "kornia-rs", "pillow"):
        raise DatasetError(f"{DECODER_VARIABLE}={choice}: use auto, kornia-rs or pillow")
    if choice == "pillow":
        return None
    try:
        import kornia_rs.io as decoder
    except ImportError as error:
        if choice == "kornia-rs":
            raise DatasetError(f"{DECODER_VARIABLE}=kornia-rs but it cannot be imported ({error}); "
                               "pip install 'kornia-rs>=0.2,<0.3' or unset the variable") from error
        return None
    return decoder


def _png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace method) from a PNG's IHDR; None for other files."""
    if len(data) < 29 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, colour, interlace


def _pillow_reads(data: bytes, size: int) -> bool:
    """Whether Pillow reads this PNG without complaint, where kornia-rs checks less: Pillow's own parse of the
    chunks before the image data (their CRCs and contents), then IDAT chunks in a row holding one complete zlib
    stream of ``size`` bytes whose Adler-32 matches (kornia-rs skips that check), then IEND, last. False also
    where Pillow would read it (a missing IEND, trailing bytes, a poorly compressed stream): Pillow then does.
    """
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)):
            pass
    except Exception:  # Pillow refuses it: let Pillow say why
        return False
    position, parts = 8, []
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        if parts and kind != b"IDAT":
            break
        if position + 12 + length > len(data):
            return False
        if kind == b"IDAT":
            parts.append(data[position + 8:position + 8 + length])
        position += 12 + length
    stream = b"".join(parts)
    if not stream or data[position:] != _IEND or len(stream) > _FAST_STREAM_SHARE * size:
        return False
    inflater = zlib.decompressobj()
    try:
        rows = inflater.decompress(stream, size + 1)
    except zlib.error:  # a bad Adler-32, a broken stream
        return False
    return len(rows) == size and inflater.eof and not inflater.unused_data


def _fast_png(data: bytes, mode: str | None) -> np.ndarray | None:
    """The pixels as Pillow gives them in ``mode`` (None: the file's own), or None where Pillow must decode.

    Only 8-bit, non-interlaced grey/RGB/RGBA PNGs whose own mode is ``mode`` and that Pillow reads without
    complaint take this path: palette, 16-bit, sub-byte, grey+alpha and interlaced files, conversions and
    corrupt files stay with Pillow.
    """
    decoder = png_decoder()
    header = _png_header(data) if decoder is not None else None
    if header is None:
        return None
    width, height, depth, colour, interlace = header
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:  # Pillow's decompression-bomb checks
        return None
    if depth != 8 or interlace or colour not in _COLOUR_TYPES or mode not in (None, _COLOUR_TYPES[colour][1]):
        return None
    channels = {0: 1, 2: 3, 6: 4}[colour]
    if not _pillow_reads(data, height * (1 + width * channels)):  # each row: a filter byte, then its pixels
        return None
    try:
        pixels = decoder.decode_image_png_u8(data, (height, width), _COLOUR_TYPES[colour][0])
    except Exception:  # a file it refuses (corrupt, unusual chunks): Pillow decodes it or names the fault
        return None
    if not isinstance(pixels, np.ndarray) or pixels.shape != (height, width, channels) or pixels.dtype != np.uint8:
        return None
    return pixels[..., 0] if channels == 1 else pixels


_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file (or a link to one), else a one-line error naming it (``what`` it should be):
    opening a named pipe for reading waits for a writer, forever."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise DatasetError(f"{path}: cannot read {what} ({error.strerror})") from error
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
        raise DatasetError(f"{path}: {kind}, not a regular file; {what} must be a regular file: replace it with the "
                           "file itself or remove it")
    return path


def _read(path: Path) -> bytes:
    try:
        return regular_file(Path(path), "an image").read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read image ({error})") from error


def _unreadable(path: Path, error: Exception) -> DatasetError:
    if isinstance(error, UnidentifiedImageError):  # Pillow's message names our in-memory copy, by its address
        return DatasetError(f"{path}: cannot read image (not an image format Pillow knows, or a damaged header)")
    if isinstance(error, Image.DecompressionBombError):
        return DatasetError(f"{path}: refused: {error} (a decompression bomb, or far larger than a dataset image); "
                            "resize it, or remove it from the dataset")
    return DatasetError(f"{path}: cannot read image ({error})")


def _raw_bytes(image: Image.Image, raw_mode: str, size: int) -> bytes:
    """``image.tobytes("raw", raw_mode)`` in one block.

    Pillow's ``tobytes`` (and ``np.asarray(image)``, which calls it) packs pixels in
    64 KB blocks and joins them: about 12 ms for a 1024x2048 image here, against
    0.5 ms with one block of the whole image (``ImageFile.MAXBLOCK`` is Pillow's
    documented block size; it is restored at once).
    """
    previous = ImageFile.MAXBLOCK
    ImageFile.MAXBLOCK = max(previous, size)
    try:
        return image.tobytes("raw", raw_mode)
    finally:
        ImageFile.MAXBLOCK = previous


def _decode(path: Path, mode: str | None) -> np.ndarray:
    """The decoded pixels as a uint8 array (H, W) or (H, W, C); other modes as numpy makes them.

    Writable where the fast decoder made them, read-only from Pillow.
    """
    data = _read(path)
    fast = _fast_png(data, mode)
    if fast is not None:
        return fast
    try:
        with Image.open(io.BytesIO(data)) as image:
            if mode and image.mode != mode:
                image = image.convert(mode)
            channels = {"L": 1, "P": 1, "RGB": 3, "RGBA": 4}.get(image.mode)
            if channels is None:
                return np.asarray(image)
            width, height = image.size
            pixels = _raw_bytes(image, image.mode, width * height * channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:  # SyntaxError: broken PNGs
        raise _unreadable(path, error) from error
    return np.frombuffer(pixels, dtype=np.uint8).reshape((height, width, channels) if channels > 1 else (height, width))


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """An image or label as a writable numpy array (``mode``: a Pillow mode such as "RGB")."""
    pixels = _decode(path, mode)
    return pixels if pixels.flags.writeable else np.array(pixels)


def _rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> int32 R + 256 G + 256^2 B in one pass: pixel k's 4 bytes from byte 3k, masked."""
    height, width, _ = rgb.shape
    count = height * width
    flat = np.ascontiguousarray(rgb).reshape(-1)
    ids = np.empty(count, dtype=np.int32)
    if count > 1:  # the last pixel's 4-byte read would pass the end of the buffer
        words = np.ndarray((count - 1,), dtype="<u4", buffer=flat, strides=(3,))
        np.bitwise_and(words, 0xFFFFFF, out=ids[:-1], casting="unsafe")
    red, green, blue = (int(v) for v in flat[-3:])
    ids[-1] = red | green << 8 | blue << 16
    return ids.reshape(height, width)


def read_panoptic_pixels(path: Path) -> np.ndarray:
    """A COCO panoptic PNG as cheaply as ``PanopticMetric`` reads it: the RGB pixels (H, W, 3) uint8 where the
    fast path decodes it (no id map made), else the ids (H, W) int32 as :func:`read_panoptic_ids` gives them.

    Pillow keeps RGB pixels as 4 bytes; dumping them raw as RGBX and masking the
    padding byte gives every id in one copy, without int64 temporaries.
    """
    data = _read(path)
    rgb = _fast_png(data, "RGB")
    if rgb is not None and rgb.size:
        return rgb
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
            width, height = image.size
            pixels = _raw_bytes(image, "RGBX", width * height * 4)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise _unreadable(path, error) from error
    ids = np.frombuffer(pixels, dtype="<u4").reshape(height, width) & 0xFFFFFF
    return ids.view(np.int32)


def read_panoptic_ids(path: Path) -> np.ndarray:
    """A COCO panoptic PNG as int32 segment ids R + 256 G + 256^2 B (0 = VOID)."""
    pixels = read_panoptic_pixels(path)
    return _rgb_to_ids(pixels) if pixels.ndim == 3 else pixels


def read_label(path: Path) -> np.ndarray:
    """A class-index label or prediction PNG (read-only; uint8 for 8-bit PNGs)."""
    return label_array(_decode(path, None))


def label_array(label: np.ndarray) -> np.ndarray:
    """Class maps: uint8 stays uint8 (the metric's fast path), anything else int64."""
    return np.ascontiguousarray(label if label.dtype == np.uint8 else label.astype(np.int64))
