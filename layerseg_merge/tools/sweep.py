"""Choose a recipe on a validation split: a grid over the anchor, ``uniform_until``, ``anchor_max`` and ``schedule``.

The inputs are loaded once; each candidate is merged in memory (:mod:`layerseg_merge.engine.in_memory`,
the same tensors ``layerseg merge`` writes), copied into its anchor's model and scored on the split
given (decoded once, :mod:`layerseg_merge.tools.scoring`), with labels (mIoU or PQ) or, with
``unsupervised``, by the label-free heuristic of :mod:`layerseg_merge.tools.unsupervised`. Under
torchrun the images are sharded over the ranks. Only the data named is read: choose a validation
split that is not your test split.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from layerseg_merge.engine.in_memory import Candidate, LoadedInputs
from layerseg_merge.engine.settings import METHOD_NAME, SHAPES, ScheduleSettings, input_weight
from layerseg_merge.eval.options import DataOptions, InferenceOptions
from layerseg_merge.eval.report_metrics import headlines
from layerseg_merge.models.info import ModelInfo

DEFAULT_GRID = {"uniform_until": [0.0, 0.25, 0.5, 0.75, 1.0], "anchor_max": [0.5, 0.75, 1.0],
                "schedule": list(SHAPES)}


class SweepError(ValueError):
    """A sweep that cannot run as asked."""


def parse_grid(options: Sequence[str], models: Sequence[str]) -> tuple[dict, list[int]]:
    """``KEY=V1,V2`` options -> the grid and the anchors (indices into ``models``; ``anchor=all`` by default)."""
    grid = {key: list(values) for key, values in DEFAULT_GRID.items()}
    anchors = list(range(len(models)))
    for option in options:
        key, _, values = option.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not items:
            raise SweepError(f"--grid {option!r}: give KEY=V1,V2,...")
        if key in ("uniform_until", "anchor_max"):
            try:
                numbers = [float(v) for v in items]
            except ValueError as error:
                raise SweepError(f"--grid {key}: numbers in [0, 1] please, not {values!r}") from error
            if not all(0 <= v <= 1 for v in numbers):
                raise SweepError(f"--grid {key}: values must lie in [0, 1]; got {values}")
            grid[key] = numbers
        elif key == "schedule":
            unknown = [v for v in items if v not in SHAPES]
            if unknown:
                raise SweepError(f"--grid schedule: unknown {unknown[0]!r}; use {', '.join(SHAPES)}")
            grid[key] = items
        elif key == "anchor":
            if items == ["all"]:
                continue
            anchors = []
            for item in items:
                if item.isdigit() and int(item) < len(models):
                    anchors.append(int(item))
                elif item in models:
                    anchors.append(list(models).index(item))
                else:
                    raise SweepError(f"--grid anchor: {item!r} is neither a model of the recipe nor its index")
        else:
            raise SweepError(f"--grid: unknown key {key!r}; use uniform_until, anchor_max, schedule or anchor")
    return grid, anchors


def candidates(grid: dict, anchors: Sequence[int], heads: str, buffers: str) -> list[Candidate]:
    """Every distinct candidate (with uniform_until 1 the schedule and anchor_max have no effect)."""
    seen, out = set(), []
    for anchor, until, top, shape in itertools.product(anchors, grid["uniform_until"], grid["anchor_max"],
                                                       grid["schedule"]):
        if until >= 1.0:
            top, shape = 1.0, "linear"
        candidate = Candidate(anchor, ScheduleSettings(until, top, shape, heads, buffers))
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out


def _plain(value, key: str, where: str):
    if isinstance(value, list | dict):
        raise SweepError(f"{where}: the sweep needs a plain value for {key!r} (not a gradient or filter)")
    return value


@dataclass
class Setup:
    """What a sweep needs from a recipe: its models (recipe order), their strings, weights and fixed settings."""

    raw: dict
    models: list[str]
    dirs: list[str]
    weights: list[float]
    heads: str
    buffers: str
    recipe_candidate: Candidate


def read_recipe(path: str | Path, log: Callable[[str], None]) -> Setup:
    import copy

    from layerseg_merge.engine.recipe_yaml import RecipeFile
    from layerseg_merge.formats.cache import import_checkpoint_models
    from layerseg_merge.plugin.recipe import model_directory, parse_recipe

    recipe = RecipeFile.read(path)  # once: a pipe gives its text only once
    raw = recipe.data
    config = parse_recipe(recipe.data, str(path), lambda data: bool(import_checkpoint_models(data, log)))
    if config.merge_method != METHOD_NAME or not config.models:
        raise SweepError(f"{path}: the sweep takes a layerwise_seg recipe with `models:`")
    where = str(path)
    dirs = [model_directory(m.model, where) for m in config.models]
    weights = [float(_plain(input_weight(m.parameters, config.parameters), "weight", where)) for m in config.models]
    shared = {key: _plain(value, key, where) for key, value in (config.parameters or {}).items() if key != "weight"}
    settings = ScheduleSettings.from_parameters(shared)  # (the recipe's values: checked as mergekit reads them)
    anchor = [m.model for m in config.models].index(config.base_model)
    names = [entry["model"] if isinstance(entry, dict) else str(entry) for entry in raw["models"]]
    return Setup(copy.deepcopy(raw), names, dirs, weights, settings.heads, settings.buffers,
                 Candidate(anchor, settings))


@dataclass(frozen=True)
class SweepOptions:
    """What the sweep searches and how it ranks: ``metric`` (mIoU or PQ), the ``grid``
    (:data:`DEFAULT_GRID` when None), the ``anchors`` (indices into the recipe's models; None: all), at most
    ``budget`` candidates, labels or the label-free heuristic (``unsupervised``), and ``cache_gb`` GiB of decoded
    images kept in memory (per process)."""

    metric: str = "mIoU"
    grid: dict | None = None
    anchors: Sequence[int] | None = None
    budget: int | None = None
    unsupervised: bool = False
    cache_gb: float = 8.0

    def __post_init__(self) -> None:
        if self.metric not in headlines():
            raise SweepError(f"--metric must be {' or '.join(headlines())}, not {self.metric!r}")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise SweepError(f"--budget {self.budget}: score at least 1 candidate (or give no budget, for all)")
        if not self.cache_gb >= 0:  # also refuses NaN
            raise SweepError(f"--cache-gb must be 0 or more, not {self.cache_gb:g}")


def run_sweep(setup: Setup, on: DataOptions, search: SweepOptions = SweepOptions(),
              infer: InferenceOptions = InferenceOptions(batch_size=8),
              log: Callable[[str], None] = lambda message: None, progress: bool = True) -> dict:
    """Score every candidate of ``search`` on the validation data ``on`` (inferring as ``infer`` says); return them
    (best first) with timings.

    The inputs are loaded once (onto the device), the validation batches decoded once (kept up to
    ``search.cache_gb`` GiB) and one model per anchor built once. Under torchrun each rank scores its share
    of the images and the metric states are all-reduced: every rank returns the same result.
    """
    from tqdm import tqdm

    from layerseg_merge.eval.evaluate import check_classes, join_ranks, open_data, score_batches, shard
    from layerseg_merge.tools.scoring import AnchorModels, CachedBatches

    metric, unsupervised, budget = search.metric, search.unsupervised, search.budget
    chosen, rank, world = join_ranks(infer.device)
    infer = replace(infer, device=str(chosen))
    inputs = LoadedInputs(setup.dirs, setup.weights)
    if chosen.type != "cpu":  # merge where the models live (LoadedInputs keeps what it loaded in .tensors)
        inputs.tensors = [{name: t.to(chosen) for name, t in tensors.items()} for tensors in inputs.tensors]
    grid = search.grid or DEFAULT_GRID
    anchors = list(search.anchors) if search.anchors is not None else list(range(len(setup.dirs)))
    task = headlines()[metric].task
    if task == "panoptic" and not unsupervised:
        panoptic = [a for a in anchors if ModelInfo.from_dir(setup.dirs[a]).gives_panoptic]
        for skipped in sorted(set(anchors) - set(panoptic)):
            log(f"anchor {setup.models[skipped]} skipped: it cannot produce panoptic output for PQ")
        anchors = panoptic
    for anchor in anchors:
        inputs.check(anchor)
    pool = candidates(grid, anchors, setup.heads, setup.buffers)
    own = setup.recipe_candidate
    pool = [own] + [c for c in pool if c != own]
    if budget is not None and len(pool) > budget:
        sampled = random.Random(0).sample(pool[1:], budget - 1)
        pool = [own] + sorted(sampled, key=pool.index)
        log(f"budget {budget}: the recipe's own setting and {budget - 1} candidates drawn at random (seed 0)")
    dataset = open_data(on, "images" if unsupervised else task)
    if not unsupervised:
        for anchor in anchors:
            check_classes(ModelInfo.from_dir(setup.dirs[anchor]), dataset, task, setup.models[anchor])
    positions = list(range(rank, len(dataset), world))
    batches = CachedBatches(shard(dataset, rank, world), infer.batch_size, on.workers, chosen.type == "cuda",
                            search.cache_gb * 2**30, positions, len(dataset), log)
    models = AnchorModels(setup.dirs, infer)
    ensemble = None
    if unsupervised:
        from layerseg_merge.eval.inference import Segmenter
        from layerseg_merge.tools.unsupervised import ensemble_maps, label_free_score

        started = time.perf_counter()
        ensemble = ensemble_maps([Segmenter(d, infer) for d in setup.dirs], batches)
        log(f"ensemble of the {len(setup.dirs)} inputs on the unlabelled images: {time.perf_counter() - started:.1f} s")
    rows = []
    started = time.perf_counter()
    for candidate in tqdm(pool, desc="sweep", unit="candidate", disable=not progress or rank != 0):
        segmenter = models.holding(candidate.anchor, inputs.merge(candidate))
        row = {"anchor": setup.models[candidate.anchor], "uniform_until": candidate.settings.uniform_until,
               "anchor_max": candidate.settings.anchor_max, "schedule": candidate.settings.schedule,
               "recipe": candidate == own}
        if unsupervised:
            row |= label_free_score(segmenter, batches, ensemble)
        else:
            report, _, _ = score_batches(segmenter, batches, task, dataset,
                                         pad_to=infer.batch_size if infer.compile else None)
            row["score"] = headlines()[metric].value(report)
        rows.append((candidate, row))
    seconds = time.perf_counter() - started
    log(models.describe())
    ordered = sorted(rows, key=lambda item: -(item[1]["score"] if item[1]["score"] is not None else -1.0))
    return {"metric": "label-free score (agreement - entropy)" if unsupervised else metric,
            "unsupervised": unsupervised, "data": on.data, "split": on.split,
            "seconds_per_candidate": seconds / max(len(rows), 1), "ranks": world,
            "best": ordered[0][0], "candidates": [row for _, row in ordered]}


def best_recipe(setup: Setup, candidate: Candidate) -> dict:
    """The recipe with the chosen anchor and schedule (models, weights and the rest as written)."""
    recipe = dict(setup.raw)
    recipe["base_model"] = setup.models[candidate.anchor]
    parameters = dict(recipe.get("parameters") or {})
    parameters.update(uniform_until=candidate.settings.uniform_until, anchor_max=candidate.settings.anchor_max,
                      schedule=candidate.settings.schedule)
    recipe["parameters"] = parameters
    return recipe


def table(result: dict) -> str:
    unsupervised = result["unsupervised"]
    head = "| rank | anchor | uniform_until | anchor_max | schedule | " + (
        "entropy | agreement | score |" if unsupervised else f"{result['metric']} |")
    lines = [head, "| ---: | --- | ---: | ---: | --- |" + (" ---: |" * (3 if unsupervised else 1))]
    for rank, row in enumerate(result["candidates"], start=1):
        mark = " (recipe)" if row["recipe"] else ""
        values = (f"{row['entropy']:.4f} | {row['agreement']:.4f} | {row['score']:.4f}" if unsupervised
                  else (f"{100 * row['score']:.2f}" if row["score"] is not None else "n/a"))
        lines.append(f"| {rank} | {Path(row['anchor']).name}{mark} | {row['uniform_until']:g} | "
                     f"{row['anchor_max']:g} | {row['schedule']} | {values} |")
    return "\n".join(lines)


def plot(result: dict, path: str | Path) -> None:
    """Every candidate's score against uniform_until; colour = anchor, marker = schedule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    anchors = sorted({row["anchor"] for row in result["candidates"]})
    markers = {"linear": "o", "cosine": "^", "step": "s"}
    figure, axis = plt.subplots(figsize=(7, 3.8), dpi=100)
    for row in result["candidates"]:
        if row["score"] is None:
            continue
        color = f"C{anchors.index(row['anchor'])}"
        size = 20 + 60 * row["anchor_max"]
        axis.scatter(row["uniform_until"], row["score"], c=color, marker=markers[row["schedule"]], s=size,
                     edgecolors="black" if row["recipe"] else "none", alpha=0.8)
    for index, anchor in enumerate(anchors):
        axis.scatter([], [], c=f"C{index}", label=f"anchor {Path(anchor).name}")
    axis.set_xlabel("uniform_until (marker: o linear, ^ cosine, s step; size: anchor_max; outlined: the recipe)",
                    fontsize=8)
    axis.set_ylabel(result["metric"] if not result["unsupervised"] else "label-free score")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
