"""The Python API of merging: :func:`merge` (what ``layerseg merge`` runs) and :func:`merge_in_memory`.

Both read a recipe the same way (strict ``layerwise_seg`` checks, ``.pth`` models imported) and
run mergekit's own planner and executor, so :func:`merge_in_memory` returns exactly the tensors
:func:`merge` writes, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from layerseg_merge.engine.recipe_yaml import RecipeFile

if TYPE_CHECKING:
    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

Recipe = str | Path | Mapping | RecipeFile


class MergeFailed(RuntimeError):
    """A merge that ran but whose result is not what the recipe asks for (nothing was written)."""


def _read(recipe: Recipe, log: Callable[[str], None]) -> tuple[MergeConfiguration, str | None, str | None]:
    """The checked configuration, its source text and the recipe file (None for a mapping); a file is read
    once (a pipe or ``/dev/stdin`` gives its text only once)."""
    from layerseg_merge.formats.cache import import_checkpoint_models
    from layerseg_merge.plugin.recipe import parse_recipe

    def imported(data: dict) -> bool:  # .pth models: imported once into the cache, merged from there
        return bool(import_checkpoint_models(data, log))

    if isinstance(recipe, Mapping):
        return parse_recipe(recipe, "recipe", imported), None, None
    if not isinstance(recipe, RecipeFile):
        recipe = RecipeFile.read(recipe)
    return parse_recipe(recipe.data, recipe.path, imported), recipe.source, recipe.path


def _options(options: MergeOptions | None) -> MergeOptions:
    """``options`` for a vision merge, its device checked."""
    from mergekit.options import MergeOptions

    from layerseg_merge.io.errors import option

    options = options or MergeOptions()
    device = str(options.device or "cpu")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():  # else torch fails later with a bare AssertionError
            raise ValueError(f"{option('--cuda / --device cuda', f'MergeOptions(device={device!r})')} asked for, "
                             "but this machine has no CUDA device torch can use; "
                             f"{option('drop the option', 'leave device out')} to merge on the CPU")
    # Vision checkpoints have no tokenizer to copy (mergekit would log a traceback trying).
    return options.model_copy(update={"copy_tokenizer": False})


def check_output_names(out: Path, anchor: str) -> None:
    """Fail unless the merged checkpoint holds exactly the anchor's tensors."""
    from layerseg_merge.io.checkpoint import read_tensor_headers

    written, expected = set(read_tensor_headers(str(out))), set(read_tensor_headers(anchor))
    if written != expected:
        missing, extra = sorted(expected - written), sorted(written - expected)
        raise MergeFailed(f"merged model does not hold exactly the anchor's tensors: missing {missing[:5]} "
                          f"({len(missing)}), unexpected {extra[:5]} ({len(extra)}); nothing was written")


def merge(recipe: Recipe, out: str | Path, *, overwrite: bool = False, options: MergeOptions | None = None,
          recalibrate: str | None = None, recalibrate_images: int | None = None,
          log: Callable[[str], None] = lambda message: None) -> Path:
    """Merge the models of ``recipe`` (a file, read once, or a mapping) into ``out``, safely; returns ``out``.

    The result is written beside ``out`` and moved into place in one step only when the merge
    succeeded; ``out`` may not be or hold an input, the current directory or the recipe's folder;
    ``overwrite`` replaces only a previous model output. An ``out`` ending in ``.pth`` exports the
    merge in the anchor's mmseg format. ``recalibrate`` (``KIND:PATH``) re-estimates BatchNorm
    statistics on those images.
    """
    from mergekit.merge import run_merge

    from layerseg_merge.engine.settings import METHOD_NAME
    from layerseg_merge.eval.options import DataOptions, InferenceOptions
    from layerseg_merge.io.errors import option
    from layerseg_merge.io.hub import is_hub_id, resolve_model_path
    from layerseg_merge.io.output import StagedOutput

    out = str(out)
    target = DataOptions(recalibrate, limit=recalibrate_images) if recalibrate else None  # checked before the work
    options = _options(options)
    config, source, recipe_file = _read(recipe, log)
    options.apply_global_options()
    inputs = [resolve_model_path(m.model.path, m.model.revision) if is_hub_id(m.model.path) else m.model.path
              for m in config.referenced_models()]
    anchor = config.base_model.model if config.base_model else None
    anchor_dir = resolve_model_path(anchor.path, anchor.revision) if anchor else None
    to_checkpoint = out.lower().endswith(".pth")
    if to_checkpoint:
        from layerseg_merge.models.info import ModelInfo

        if anchor_dir is None or not Path(anchor_dir, "config.json").is_file() or \
                ModelInfo.from_dir(anchor_dir).mmseg is None:
            raise MergeFailed(f"{out} ends in .pth, but the anchor {anchor} is not an mmseg checkpoint; give a folder "
                              f"as {option('OUT', 'out')} (or anchor the merge on an imported .pth)")
    with StagedOutput(out, "file" if to_checkpoint else "dir", overwrite=overwrite, inputs=inputs,
                      recipe=recipe_file, log=log) as staged:
        merged = staged.workdir() if to_checkpoint else staged.staging
        run_merge(config, str(merged), options=options, config_source=source)
        if config.merge_method == METHOD_NAME:
            check_output_names(merged, anchor_dir)
        if recalibrate:
            from layerseg_merge.tools.recalibrate import recalibrate_directory

            done = recalibrate_directory(merged, target, merged, staged.workdir("bn"),
                                         InferenceOptions(device=str(options.device or "auto"), batch_size=8))
            log("the merge has no BatchNorm layers: nothing to recalibrate" if done is None else
                f"BatchNorm statistics re-estimated on {done.images} images ({done.layers} layers)")
        if to_checkpoint:
            import torch

            from layerseg_merge.formats.mmseg import export_state

            torch.save(export_state(merged), staged.staging)
        staged.commit()
    return Path(out)


def merge_in_memory(recipe: Recipe, options: MergeOptions | None = None,
                    log: Callable[[str], None] = lambda message: None) -> dict[str, torch.Tensor]:
    """The tensors :func:`merge` would write for ``recipe``: the same names, dtypes and values, bit for bit.

    Runs mergekit's planner and executor without the writer, so the recipe is read, checked and
    merged exactly as by ``layerseg merge``; nothing is written.
    """
    from mergekit.architecture import get_architecture_info
    from mergekit.common import dtype_from_name
    from mergekit.graph import Executor
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import _model_out_config
    from mergekit.plan import MergePlanner

    from layerseg_merge.plugin import compat

    options = _options(options)
    config, _, _ = _read(recipe, log)
    options.apply_global_options()
    arch_info = get_architecture_info(config, options)
    LoaderCache().setup(options=options)
    out_config = _model_out_config(config, arch_info, trust_remote_code=options.trust_remote_code)
    planner = MergePlanner(config, arch_info, options=options, out_model_config=out_config)
    weights, cast = compat.in_memory_targets(planner)
    executor = Executor(targets=list(weights), math_device=options.device,
                        storage_device=options.device if options.low_cpu_memory else "cpu")
    merged = {}
    for task, value in executor.run(quiet=True):
        weight = weights.get(task)
        if weight is not None and value is not None:
            dtype = (weight.force_dtype or config.out_dtype) if cast else None
            if dtype:  # as mergekit's in-memory output task would, overflows refused
                value = compat.checked_out_cast(task, value, dtype, weight.name).to(dtype_from_name(dtype))
            merged[weight.name] = value
    return merged
