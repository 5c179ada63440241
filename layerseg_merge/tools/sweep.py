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
    """What the sweep searches and how it ranks: ``metric`` (a headline report metric: mIoU or PQ), the ``grid``
    (:data:`DEFAULT_GRID` when None), the ``anchors`` (indices into the recipe's models; None: all), at most
    ``budget`` merge candidates (each input alone is a candidate besides), labels or a label-free ``selector``
    (``unsupervised``, :mod:`layerseg_merge.tools.unsupervised`; ``confidence``: the ensemble's least mean
    probability for a pseudo-label), a labelled ``source_data`` split whose mIoU vetoes a candidate that loses
    more than ``veto_margin`` of its anchor's, and ``cache_gb`` GiB of decoded images kept in memory (per
    process)."""

    metric: str = "mIoU"
    grid: dict | None = None
    anchors: Sequence[int] | None = None
    budget: int | None = None
    unsupervised: bool = False
    cache_gb: float = 8.0
    selector: str = "pseudo-miou"
    confidence: float = 0.5
    source_data: str | None = None
    veto_margin: float = 0.05

    def __post_init__(self) -> None:
        from layerseg_merge.tools.unsupervised import SELECTORS

        if self.metric not in headlines():
            raise SweepError(f"--metric must be {' or '.join(headlines())}, not {self.metric!r}")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise SweepError(f"--budget {self.budget}: score at least 1 candidate (or give no budget, for all)")
        if not self.cache_gb >= 0:  # also refuses NaN
            raise SweepError(f"--cache-gb must be 0 or more, not {self.cache_gb:g}")
        if self.selector not in SELECTORS:
            raise SweepError(f"--selector {self.selector}: use {' or '.join(SELECTORS)}")
        if not 0 <= self.confidence < 1:
            raise SweepError(f"--confidence {self.confidence:g}: give the ensemble's least mean probability for a "
                             "pseudo-label, from 0 (every pixel) to below 1")
        if not 0 <= self.veto_margin <= 1:
            raise SweepError(f"--veto-margin {self.veto_margin:g}: give the source mIoU a candidate may lose against "
                             "its anchor, from 0 to 1 (0.05: 5 points)")


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

    from layerseg_merge.eval.evaluate import check_classes, join_ranks, open_data, shard
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
    pool += [Candidate(anchor, own.settings, alone=True) for anchor in anchors]  # "do not merge" is an answer
    dataset = open_data(on, "images" if unsupervised else task)
    if not unsupervised:
        for anchor in anchors:
            check_classes(ModelInfo.from_dir(setup.dirs[anchor]), dataset, task, setup.models[anchor])
    positions = list(range(rank, len(dataset), world))
    batches = CachedBatches(shard(dataset, rank, world), infer.batch_size, on.decoders(chosen.type),
                            chosen.type == "cuda", search.cache_gb * 2**30, positions, len(dataset), log)
    models = AnchorModels(setup.dirs, infer)
    source = _SourceVeto(search, on, setup, anchors, inputs, models, infer, chosen, rank, world, log) \
        if search.source_data else None
    score = _scorer(search, task, dataset, batches, setup, infer, log)
    rows = []
    started = time.perf_counter()
    for candidate in tqdm(pool, desc="sweep", unit="candidate", disable=not progress or rank != 0):
        segmenter = models.holding(candidate.anchor, inputs.merge(candidate))
        settings = candidate.settings
        row = {"anchor": setup.models[candidate.anchor], "alone": candidate.alone,
               "uniform_until": None if candidate.alone else settings.uniform_until,
               "anchor_max": None if candidate.alone else settings.anchor_max,
               "schedule": None if candidate.alone else settings.schedule, "recipe": candidate == own}
        row |= score(segmenter)
        if source is not None:
            row |= source.check(candidate, segmenter)
        rows.append((candidate, row))
    seconds = time.perf_counter() - started
    log(models.describe())
    ranked = [item for item in rows if not item[1].get("vetoed")]
    ordered = sorted(ranked, key=lambda item: -(item[1]["score"] if item[1]["score"] is not None else -1.0))
    ordered += [item for item in rows if item[1].get("vetoed")]
    scores = [row["score"] for _, row in ordered[:2] if not row.get("vetoed") and row["score"] is not None]
    return {"metric": f"label-free: {search.selector}" if unsupervised else metric,
            "selector": search.selector if unsupervised else f"labelled {metric}", "unsupervised": unsupervised,
            "confidence": search.confidence if unsupervised and search.selector == "pseudo-miou" else None,
            "source_veto": {"data": search.source_data, "margin": search.veto_margin} if source else None,
            "margin": scores[0] - scores[1] if len(scores) == 2 else None,
            "data": on.data, "split": on.split, "seconds_per_candidate": seconds / max(len(rows), 1), "ranks": world,
            "best": ordered[0][0], "candidates": [row for _, row in ordered]}


def _scorer(search: SweepOptions, task: str, dataset, batches, setup: Setup, infer: InferenceOptions,
            log: Callable[[str], None]) -> Callable:
    """How a candidate's model is scored: the headline metric on labels, or a label-free selector."""
    from layerseg_merge.eval.evaluate import score_batches

    if not search.unsupervised:
        metric = headlines()[search.metric]

        def labelled(segmenter) -> dict:
            report, _, _ = score_batches(segmenter, batches, task, dataset,
                                         pad_to=infer.batch_size if infer.compile else None)
            return {"score": metric.value(report)}

        return labelled
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.tools.unsupervised import ensemble_of, label_free_score, labelled_share

    started = time.perf_counter()
    ensemble = ensemble_of([Segmenter(d, infer) for d in setup.dirs], batches)
    pseudo = ensemble.pseudo_labels(search.confidence) if search.selector == "pseudo-miou" else None
    log(f"ensemble of the {len(setup.dirs)} inputs on the unlabelled images: {time.perf_counter() - started:.1f} s"
        + (f"; {100 * labelled_share(pseudo, batches, infer.device):.1f} % of the pixels pseudo-labelled at "
           f"confidence {search.confidence:g}" if pseudo is not None else ""))
    return lambda segmenter: label_free_score(search.selector, segmenter, batches, ensemble, search.confidence,
                                              pseudo)


class _SourceVeto:
    """The labelled source split: a candidate whose source mIoU falls more than the margin below its anchor's
    alone is vetoed (it forgot what the anchor knew)."""

    def __init__(self, search: SweepOptions, on: DataOptions, setup: Setup, anchors: list[int], inputs, models,
                 infer: InferenceOptions, chosen, rank: int, world: int, log: Callable[[str], None]):
        from layerseg_merge.eval.evaluate import check_classes, open_data, shard
        from layerseg_merge.tools.scoring import CachedBatches

        self.source = DataOptions(search.source_data, on.split, on.limit, on.workers)
        self.dataset = open_data(self.source, "semantic")
        for anchor in anchors:
            check_classes(ModelInfo.from_dir(setup.dirs[anchor]), self.dataset, "semantic", setup.models[anchor])
        self.batches = CachedBatches(shard(self.dataset, rank, world), infer.batch_size,
                                     self.source.decoders(chosen.type), chosen.type == "cuda",
                                     search.cache_gb * 2**30, list(range(rank, len(self.dataset), world)),
                                     len(self.dataset), log)
        self.margin = search.veto_margin
        settings = setup.recipe_candidate.settings
        self.reference = {anchor: self.score(models.holding(anchor, inputs.merge(Candidate(anchor, settings,
                                                                                           alone=True))))
                          for anchor in anchors}
        found = ", ".join(f"{Path(setup.models[a]).name} {100 * (v or 0):.2f}" for a, v in self.reference.items())
        log(f"source mIoU of each anchor alone: {found}")

    def score(self, segmenter) -> float | None:
        from layerseg_merge.eval.evaluate import score_batches

        report, _, _ = score_batches(segmenter, self.batches, "semantic", self.dataset)
        return report["mIoU"]

    def check(self, candidate: Candidate, segmenter) -> dict:
        value = self.reference[candidate.anchor] if candidate.alone else self.score(segmenter)
        reference = self.reference[candidate.anchor]
        vetoed = value is not None and reference is not None and value < reference - self.margin
        return {"source_score": value, "vetoed": bool(vetoed)}


def best_recipe(setup: Setup, candidate: Candidate) -> dict:
    """The recipe with the chosen anchor and schedule (models, weights and the rest as written); for an input
    alone, the recipe that reproduces it: the others at weight 0."""
    recipe = dict(setup.raw)
    recipe["base_model"] = setup.models[candidate.anchor]
    parameters = dict(recipe.get("parameters") or {})
    parameters.update(uniform_until=candidate.settings.uniform_until, anchor_max=candidate.settings.anchor_max,
                      schedule=candidate.settings.schedule)
    recipe["parameters"] = parameters
    if candidate.alone:
        entries = []
        for index, entry in enumerate(recipe["models"]):
            entry = dict(entry) if isinstance(entry, dict) else {"model": str(entry)}
            entry["parameters"] = dict(entry.get("parameters") or {}, weight=1.0 if index == candidate.anchor else 0.0)
            entries.append(entry)
        recipe["models"] = entries
    return recipe


def table(result: dict) -> str:
    """The candidates, best first, as Markdown; the selector and its margin to the runner-up above."""
    unsupervised = result["unsupervised"]
    free = unsupervised and result["selector"] == "agreement-entropy"
    veto = result.get("source_veto") is not None
    head = "| rank | anchor | uniform_until | anchor_max | schedule | " + (
        "entropy | agreement | score |" if free else f"{result['metric']} |") + (" source mIoU |" if veto else "")
    columns = 5 + (3 if free else 1) + veto
    lines = [head, "| ---: | --- | ---: | ---: | --- |" + " ---: |" * (columns - 5)]
    for rank, row in enumerate(result["candidates"], start=1):
        mark = " (recipe)" if row["recipe"] else ""
        values = (f"{row['entropy']:.4f} | {row['agreement']:.4f} | {row['score']:.4f}" if free
                  else (f"{100 * row['score']:.2f}" if row["score"] is not None else "n/a"))
        if veto:
            source = row.get("source_score")
            values += f" | {100 * source:.2f}" if source is not None else " | n/a"
            values += " (vetoed)" if row.get("vetoed") else ""
        if row.get("alone"):
            lines.append(f"| {rank} | {Path(row['anchor']).name}{mark} | - | - | alone (no merge) | {values} |")
        else:
            lines.append(f"| {rank} | {Path(row['anchor']).name}{mark} | {row['uniform_until']:g} | "
                         f"{row['anchor_max']:g} | {row['schedule']} | {values} |")
    margin = result.get("margin")
    lines += ["", f"Chosen by {result['selector']}" + (f"; margin to the runner-up {100 * margin:.2f} points"
                                                      if margin is not None and not free else
                                                      f"; margin to the runner-up {margin:.4f}" if margin is not None
                                                      else "") + "."]
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
        if row.get("alone"):  # a dashed line: the model as it is
            axis.axhline(row["score"], color=color, linestyle="--", linewidth=1)
            continue
        size = 20 + 60 * row["anchor_max"]
        axis.scatter(row["uniform_until"], row["score"], c=color, marker=markers[row["schedule"]], s=size,
                     edgecolors="black" if row["recipe"] else "none", alpha=0.8)
    for index, anchor in enumerate(anchors):
        axis.scatter([], [], c=f"C{index}", label=f"anchor {Path(anchor).name}")
    axis.set_xlabel("uniform_until (marker: o linear, ^ cosine, s step; size: anchor_max; outlined: the recipe; "
                    "dashed: an input alone)", fontsize=8)
    axis.set_ylabel(result["metric"] if not result["unsupervised"] else f"label-free ({result['selector']})")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
