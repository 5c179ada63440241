"""What ``layerseg sweep`` keeps between candidates: the validation batches and one model per anchor.

The validation images of this rank are decoded on the first pass and kept in memory (up to a budget);
one model per anchor is built once and every candidate's merged tensors are copied into it. Together
with the in-memory merges this leaves, per candidate, the merge, the copy and the forward passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from layerseg_merge.eval.evaluate import host_batches
from layerseg_merge.eval.options import InferenceOptions


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, list | tuple):
        return sum(_nbytes(v) for v in value)
    return 0


class CachedBatches:
    """Host batches of ``dataset`` (this rank's part), decoded on the first pass and replayed after it.

    Batches beyond ``budget`` bytes are not kept: the cache is dropped and every pass decodes again.
    ``positions`` are the samples' indices in the whole dataset (of ``total`` samples), in batch order.
    """

    def __init__(self, dataset, batch_size: int, workers: int, pin: bool, budget: float,
                 positions: list[int], total: int, log: Callable[[str], None] = lambda message: None):
        self.dataset, self.batch_size, self.workers, self.pin = dataset, batch_size, workers, pin
        self.budget, self.positions, self.total, self.log = budget, positions, total, log
        self.kept: list[dict] | None = None
        self.too_large = False

    def __iter__(self) -> Iterator[dict]:
        if self.kept is not None:
            yield from self.kept
            return
        kept: list[dict] | None = None if self.too_large else []
        size = 0
        for batch in host_batches(self.dataset, self.batch_size, self.workers, self.pin):
            if kept is not None:
                size += sum(_nbytes(v) for v in batch.values())
                if size > self.budget:
                    kept, self.too_large = None, True
                    self.log(f"the decoded validation data passes --cache-gb {self.budget / 2**30:g}: it is decoded "
                             "again for every candidate")
                else:
                    kept.append(batch)
            yield batch
        self.kept = kept  # only after a complete pass


def _file_views(model: torch.nn.Module, names: set[str]) -> dict[str, torch.Tensor] | None:
    """The model's parameters and buffers under the checkpoint's (file) names, as the very tensors of the
    model; None where names and tensors do not map one to one (a transformers conversion that is more
    than a renaming, or a model that is not a transformers model with other names)."""
    state = model.state_dict()
    views = state
    if set(state) != names:
        try:  # transformers 5 renames legacy checkpoint keys on load; this is the inverse save_pretrained uses
            from transformers.core_model_loading import revert_weight_conversion

            views = revert_weight_conversion(model, dict(state))
        except Exception:  # not a transformers model, or another transformers API: a model per candidate
            return None
    own = {(t.data_ptr(), tuple(t.shape), t.stride()) for t in state.values()}
    if set(views) != names or any((t.data_ptr(), tuple(t.shape), t.stride()) not in own for t in views.values()):
        return None
    return views


class AnchorModels:
    """One model per anchor (run as ``infer`` says), built once from a candidate's tensors; later candidates are
    copied into it."""

    def __init__(self, dirs: list[str], infer: InferenceOptions):
        self.dirs, self.infer = dirs, infer
        self.held: dict[int, tuple[object, dict[str, torch.Tensor]]] = {}
        self.rebuilt: set[int] = set()  # anchors whose model is built for every candidate

    def holding(self, anchor: int, tensors: dict[str, torch.Tensor]):
        """The anchor's Segmenter with ``tensors`` (file names) as its weights."""
        from layerseg_merge.eval.inference import Segmenter

        if anchor in self.held:
            segmenter, views = self.held[anchor]
            with torch.no_grad():
                for name, view in views.items():
                    view.copy_(tensors[name])
            return segmenter
        # The model's own copies: a tensor of the merge may be an input itself (a copied tensor), and the
        # next candidate is written into the model in place.
        owned = {name: tensor.detach().to("cpu", copy=True) for name, tensor in tensors.items()}
        segmenter = Segmenter(self.dirs[anchor], self.infer, tensors=owned)
        if anchor not in self.rebuilt:
            views = _file_views(segmenter.model, set(owned))
            same = views is not None and all(torch.equal(view.cpu(), owned[name].to(view.dtype))
                                             for name, view in views.items())
            if same:  # no value changed on the way in: copying in place is what loading does
                self.held[anchor] = (segmenter, views)
            else:
                self.rebuilt.add(anchor)
        return segmenter

    def describe(self) -> str:
        kept = ", ".join(Path(self.dirs[a]).name for a in sorted(self.held)) or "none"
        built = ", ".join(Path(self.dirs[a]).name for a in sorted(self.rebuilt)) or "none"
        return f"models reused across candidates: {kept}; built per candidate: {built}"
