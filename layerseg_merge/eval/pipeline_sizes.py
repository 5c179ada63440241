"""The sizes mmseg's test pipeline takes (img_scale, sliding windows, strides; ``--test-scale``), checked.

No torch: ``InferenceOptions`` checks ``--test-scale`` with these before a command starts. Each side a
whole number of pixels from 1 to ``MAX_SIDE`` (16384: twice an 8K UHD frame's 7680, 8x a Cityscapes
image), and a network input (the resized image, a window) of at most ``MAX_PIXELS`` (64 Mpx, 8192 x
8192: 32x the largest released one, HRDA's 2048 x 1024, where the float32 logits of 19 classes alone
take 5 GB per image).
"""

from __future__ import annotations

import math
import reprlib

MAX_SIDE, MAX_PIXELS = 16384, 1 << 26  # the bounds of a size (see the module docstring)
TEST_SCALE_FIX = "give W,H in pixels, e.g. 1024,512"


class PipelineError(ValueError):
    """A ``test_pipeline`` setting that cannot be followed; the message names it."""


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def size_problem(value, sides: int = 2, window: bool = True) -> str | None:
    """Why ``value`` is not a size the test pipeline runs at (None: it is).

    ``sides`` 2: [W, H]; 1: one number (a square window's side, a stride). Each side a whole number of
    pixels from 1 to ``MAX_SIDE``; with ``window`` the network input it makes (W x H, side x side) at
    most ``MAX_PIXELS``.
    """
    if sides == 1:
        values = [value]
    elif isinstance(value, list | tuple) and len(value) == sides:
        values = list(value)
    else:
        return f"must be {sides} whole numbers of pixels"
    if not all(_whole(v) and 1 <= v <= MAX_SIDE for v in values):
        return f"{'each side ' if sides > 1 else ''}must be a whole number of pixels from 1 to {MAX_SIDE}"
    pixels = math.prod(values) if sides > 1 else values[0] ** 2
    if window and pixels > MAX_PIXELS:
        return f"a network input of {pixels} px is more than layerseg runs ({MAX_PIXELS} px, 8192 x 8192)"
    return None


def shown(value) -> str:
    """``value`` as a message shows it: its repr, shortened (a long list, a huge number)."""
    return reprlib.repr(value)


def checked_size(value, name: str, fix: str, sides: int = 2, window: bool = True, text: str | None = None) -> list[int]:
    """``value`` as ``sides`` pixel sizes (see :func:`size_problem`); else a PipelineError.

    The message: ``{name} {text or value}: {problem}; {fix}``, ``name`` being the file and key (or the option).
    """
    problem = size_problem(value, sides, window)
    if problem:
        raise PipelineError(f"{name} {text or shown(value)}: {problem}; {fix}")
    return [value] if sides == 1 else list(value)


def checked_test_scale(value, text: str | None = None) -> tuple[int, int]:
    """``--test-scale`` (w, h) as a checked img_scale; ``text``: as the user wrote it."""
    if text is None and isinstance(value, list | tuple):
        text = ",".join(map(str, value))
    width, height = checked_size(value, "--test-scale", TEST_SCALE_FIX, text=text)
    return width, height
