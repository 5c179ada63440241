"""Layer-wise merge coefficients learned without labels: ``layerseg fit``.

One coefficient per input per depth step (the architecture definition's flattened backbone layers):
``c[l] = softmax(z[l])`` over the inputs, the merged backbone ``theta_l = sum_m c[l, m] theta_{m, l}``,
started from the recipe's own coefficients. ``z`` is learned by gradient descent on unlabelled target
images: ``kl`` (default) minimises the divergence KL(ensemble || merge) between the inputs' ensemble
(the mean of their softmax, each input as stored) and the merge's predictions, matching the experts'
outputs (as Representation Surgery, SyMerge and SAMerging do); ``entropy`` minimises the merge's
prediction entropy (AdaMerging's objective), for comparison. Heads and BatchNorm statistics follow the
recipe's policies and are not learned.

The result is a normal recipe: ``uniform_until: 1`` (the plain weighted mean) and each input's ``weight``
a mergekit gradient list, one value per depth step, so ``layerseg merge`` and the plain ``mergekit-yaml``
reproduce it. Under torchrun each rank takes its share of every step's images; the per-image gradients
are gathered and summed in dataset order, so N processes learn the same coefficients as one.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from layerseg_merge.engine.in_memory import Candidate, LoadedInputs
from layerseg_merge.engine.plan import plan_tensor
from layerseg_merge.eval.options import DataOptions, InferenceOptions

OBJECTIVES = ("kl", "entropy")


class FitError(ValueError):
    """A fit that cannot run as asked."""


@dataclass(frozen=True)
class FitOptions:
    """``steps`` of gradient descent (Adam, learning rate ``lr``) over ``images`` target images per step, on
    ``objective`` (kl or entropy); ``seed`` draws the images of each step."""

    steps: int = 40
    lr: float = 0.05
    images: int = 8
    objective: str = "kl"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise FitError(f"--steps {self.steps}: take at least 1 step")
        if not (isinstance(self.lr, float | int) and math.isfinite(self.lr) and self.lr > 0):
            raise FitError(f"--lr {self.lr}: give a positive learning rate, e.g. 0.05")
        if not isinstance(self.images, int) or self.images < 1:
            raise FitError(f"--images {self.images}: use at least 1 image per step")
        if self.objective not in OBJECTIVES:
            raise FitError(f"--objective {self.objective}: use {' or '.join(OBJECTIVES)}")


class _Merger:
    """The anchor's model with its backbone layers a differentiable mix of the inputs'; every other tensor is the
    recipe's merge."""

    def __init__(self, inputs: LoadedInputs, anchor: int, settings, segmenter, device):
        from layerseg_merge.tools.scoring import _file_views

        self.inputs, self.anchor, self.segmenter = inputs, anchor, segmenter
        layout = inputs.layouts[anchor]
        fixed = inputs.merge(Candidate(anchor, settings))
        views = _file_views(segmenter.model, set(fixed))
        if views is None:
            raise FitError(f"{inputs.dirs[anchor]}: its model's tensors are not its file's under other names, which "
                           "fit needs; fit a transformers SegFormer, Swin, ConvNeXt or ViT host")
        by_pointer = {tensor.data_ptr(): name for name, tensor in segmenter.model.state_dict().items()}
        self.state_name = {file_name: by_pointer[view.data_ptr()] for file_name, view in views.items()}
        self.fixed = {self.state_name[name]: value.to(device) for name, value in fixed.items()}
        self.layers = []  # per depth step: (state name, member indices, member tensors) of its float tensors
        self.start = torch.zeros(len(layout.layers), len(inputs.dirs), dtype=torch.float64)
        for index, layer in enumerate(layout.layers):
            entries = []
            for info in layer:
                if not info.dtype.is_floating_point:
                    continue
                plan = plan_tensor(inputs.layouts, anchor, info.name, inputs.weights, settings)
                values = [inputs.tensors[m][n].to(device) for m, n in zip(plan.members, plan.names)]
                entries.append((self.state_name[info.name], plan.members, values))
                if len(plan.members) == len(inputs.dirs) and not self.start[index].any():
                    self.start[index] = torch.tensor(plan.coefficients, dtype=torch.float64)
            self.layers.append(entries)
        for index in range(len(self.layers)):  # a layer no tensor of which all inputs hold: equal shares
            if not self.start[index].any():
                self.start[index] = 1.0 / len(inputs.dirs)

    def parameters(self, z: torch.Tensor) -> dict:
        """Every tensor of the merged model, the backbone's as functions of ``z``."""
        merged = dict(self.fixed)
        for index, entries in enumerate(self.layers):
            for state_name, members, values in entries:
                shares = torch.softmax(z[index, list(members)], 0)
                merged[state_name] = sum(share.to(value.dtype) * value for share, value in zip(shares, values))
        return merged

    def logits(self, z: torch.Tensor, images) -> torch.Tensor:
        inputs = self.segmenter.inputs(images)
        return torch.func.functional_call(self.segmenter.model, self.parameters(z), args=(),
                                          kwargs=inputs).logits.float()


def _ensemble(segmenters, images, size) -> torch.Tensor:
    """The mean softmax of the inputs at ``size`` (the merged model's logits' size)."""
    with torch.no_grad():
        total = 0
        for segmenter in segmenters:
            logits = segmenter._run(segmenter.inputs(images)).logits.float()
            total = total + F.interpolate(logits, size=size, mode="bilinear", align_corners=False).softmax(1)
        return (total / len(segmenters)).clone()  # (a normal tensor: the loss saves it for its backward)


def _loss(logits: torch.Tensor, target: torch.Tensor | None, objective: str) -> torch.Tensor:
    log_p = logits.log_softmax(1)
    if objective == "entropy":
        return -(log_p.exp() * log_p).sum(1).mean()
    return (target * (target.clamp_min(1e-12).log() - log_p)).sum(1).mean()  # KL(ensemble || merge)


def fit(setup, on: DataOptions, options: FitOptions = FitOptions(), infer: InferenceOptions = InferenceOptions(),
        log: Callable[[str], None] = lambda message: None, progress: bool = False) -> dict:
    """Learn the coefficients of ``setup`` (a sweep's read recipe) on the unlabelled images ``on``; returns the
    fitted recipe, the coefficients and the objective per step (every rank the same)."""
    from tqdm import tqdm

    from layerseg_merge.eval.evaluate import gather_rows, join_ranks, open_data
    from layerseg_merge.eval.inference import Segmenter

    chosen, rank, world = join_ranks(infer.device)
    infer = replace(infer, device=str(chosen))
    anchor = setup.recipe_candidate.anchor
    settings = setup.recipe_candidate.settings
    dataset = open_data(on, "images")
    inputs = LoadedInputs(setup.dirs, setup.weights)
    inputs.check(anchor)
    segmenters = [Segmenter(d, infer) for d in setup.dirs]
    merger = _Merger(inputs, anchor, settings, segmenters[anchor], chosen)
    for parameter in merger.segmenter.model.parameters():
        parameter.requires_grad_(False)
    z = merger.start.clamp_min(1e-6).log().to(torch.float32).requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=options.lr)
    order = random.Random(options.seed)
    history = []
    for _ in tqdm(range(options.steps), desc="fit", unit="step", disable=not progress or rank != 0):
        chosen_images = order.sample(range(len(dataset)), min(options.images, len(dataset)))
        mine = [(position, index) for position, index in enumerate(chosen_images) if position % world == rank]
        rows = []
        for _, index in mine:
            image = torch.from_numpy(dataset[index]["image"]).permute(2, 0, 1)[None]
            logits = merger.logits(z, image)
            target = _ensemble(segmenters, image, logits.shape[-2:]) if options.objective == "kl" else None
            loss = _loss(logits, target, options.objective)
            (gradient,) = torch.autograd.grad(loss, z)
            rows.append(torch.cat([loss.detach().double().reshape(1), gradient.double().flatten()]))
        table = gather_rows(torch.stack(rows) if rows else torch.zeros(0, 1 + z.numel(), dtype=torch.float64),
                            [position for position, _ in mine], len(chosen_images), chosen)
        total = table.sum(0) / len(chosen_images)  # the mean over the step's images, summed in their order
        optimiser.zero_grad()
        z.grad = total[1:].reshape(z.shape).to(z.dtype).to(z.device)
        optimiser.step()
        history.append(float(total[0]))
        log(f"fit step {len(history)}: {options.objective} {history[-1]:.6f}")
    coefficients = torch.softmax(z.detach().double(), 1)
    return {"recipe": fitted_recipe(setup, coefficients), "objective": options.objective, "history": history,
            "coefficients": coefficients.tolist(), "start": merger.start.tolist(),
            "models": list(setup.models), "anchor": setup.models[anchor], "ranks": world}


def fitted_recipe(setup, coefficients: torch.Tensor) -> dict:
    """The recipe whose merge uses ``coefficients`` (depth steps x inputs): each input's weight a gradient list of
    its coefficient per depth step, ``uniform_until: 1`` so that a weight is the coefficient; the rest as written."""
    recipe = copy.deepcopy(setup.raw)
    parameters = dict(recipe.get("parameters") or {})
    parameters.update(uniform_until=1.0, anchor_max=1.0, schedule="linear")
    parameters.pop("weight", None)
    recipe["parameters"] = parameters
    entries = []
    for index, entry in enumerate(recipe["models"]):
        entry = dict(entry) if isinstance(entry, dict) else {"model": str(entry)}
        weights = [round(float(value), 12) for value in coefficients[:, index]]
        entry["parameters"] = dict(entry.get("parameters") or {}, weight=weights)
        entries.append(entry)
    recipe["models"] = entries
    return recipe
