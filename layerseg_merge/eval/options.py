"""What to run a model on and how to infer: the options ``evaluate``, the sweep and recalibration share.

Each option object checks its values once, when it is made (no torch here: the command line builds
them before anything heavy is imported); an impossible value is a one-line ``ValueError`` that names
the command-line option.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerseg_merge.eval.pipeline_sizes import checked_test_scale

AMP_MODES = ("off", "bf16", "fp16")
PREPROCESS_MODES = ("auto", "device", "processor")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataOptions:
    """What to run on: a dataset spec (``KIND:PATH``, :func:`layerseg_merge.eval.datasets.open_dataset`), its
    split, its first ``limit`` images (None: all) and the DataLoader ``workers`` decoding them (None: as the cores
    allow, :meth:`decoders`)."""

    data: str
    split: str = "val"
    limit: int | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and (not _whole(self.limit) or self.limit < 1):
            raise ValueError(f"a limit of {self.limit} images leaves none to use; give at least 1 (or no limit, "
                             "for all)")
        if self.workers is not None and (not _whole(self.workers) or self.workers < 0):
            raise ValueError(f"--workers {self.workers}: give 0 (decode in this process) or more DataLoader "
                             "workers")

    def decoders(self, device_type: str) -> int:
        """The DataLoader workers to run: as given, else what the thread policy leaves beside the torch threads on
        the cores this process may use (:mod:`layerseg_merge.io.cpus`)."""
        if self.workers is not None:
            return self.workers
        from layerseg_merge.io.cpus import thread_plan

        return thread_plan(device=device_type).workers


@dataclass(frozen=True)
class InferenceOptions:
    """How to infer: the device (``auto``: CUDA when available), images per forward pass (and crops per forward
    pass with ``slide``), autocast, sliding windows (CROP, STRIDE) in pixels, where to preprocess
    (:mod:`layerseg_merge.eval.preprocess`), whether to ``torch.compile`` the model, and ``test_scale`` (w, h): the
    mmseg test img_scale of an imported DAFormer/HRDA/MIC model instead of its own (None: its own)."""

    device: str = "auto"
    batch_size: int = 4
    amp: str = "off"
    slide: tuple[int, int] | None = None
    preprocess: str = "auto"
    compile: bool = False
    test_scale: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not _whole(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size}: give at least 1 image per batch")
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp {self.amp}: use off, bf16 or fp16")
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be auto, device or processor, not {self.preprocess!r}")
        if self.slide is not None:
            object.__setattr__(self, "slide", _windows(self.slide))
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, not {self.compile!r}")
        if self.test_scale is not None:
            object.__setattr__(self, "test_scale", checked_test_scale(self.test_scale))


def _windows(slide) -> tuple[int, int]:
    """``slide`` as (CROP, STRIDE): windows of CROP pixels every STRIDE pixels, which must not leave gaps."""
    try:
        crop, stride = slide
    except (TypeError, ValueError):
        raise ValueError(f"--slide {slide!r}: give CROP,STRIDE, two whole numbers of pixels, e.g. 512,341") from None
    if not (_whole(crop) and _whole(stride)):
        raise ValueError(f"--slide {crop},{stride}: give CROP,STRIDE, two whole numbers of pixels, e.g. 512,341")
    if crop < 1 or stride < 1 or stride > crop:
        raise ValueError(f"--slide {crop},{stride}: CROP and STRIDE must be positive and STRIDE at most CROP "
                         "(windows of CROP pixels every STRIDE pixels; a larger stride leaves pixels out); "
                         "e.g. 512,341")
    return crop, stride
