"""``layerseg merge``: mergekit-yaml with strict recipes and safe, atomic output."""

from __future__ import annotations

from pathlib import Path

import click
from mergekit.options import add_merge_options

from layerseg_merge.errors import reported


def check_output_names(out: Path, anchor: str) -> None:
    """Fail unless the merged checkpoint holds exactly the anchor's tensors."""
    from layerseg_merge.checkpoint import read_tensor_headers

    written, expected = set(read_tensor_headers(str(out))), set(read_tensor_headers(anchor))
    if written != expected:
        missing, extra = sorted(expected - written), sorted(written - expected)
        raise click.ClickException(
            f"merged model does not hold exactly the anchor's tensors: missing {missing[:5]} "
            f"({len(missing)}), unexpected {extra[:5]} ({len(extra)}); nothing was written"
        )


def _check_device(merge_options) -> None:
    device = str(merge_options.device or "cpu")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise click.ClickException("--cuda / --device cuda asked for, but this machine has no CUDA device "
                                       "torch can use; drop the option to merge on the CPU")


@click.command("merge")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it holds a previous model output.")
@click.option("--recalibrate", "recalibrate_data", default=None, metavar="KIND:PATH",
              help="re-estimate the merge's BatchNorm statistics on these target images (labels unused)")
@click.option("--recalibrate-images", type=click.IntRange(min=1), default=None, help="use the first N images")
@add_merge_options
def merge(merge_options, recipe: str, out: str, overwrite: bool, recalibrate_data: str | None,
          recalibrate_images: int | None) -> None:
    """Merge the models of RECIPE into OUT (takes every mergekit-yaml option).

    The result is written beside OUT and moved into place in one step only when
    the merge succeeded (and, for layerwise_seg, holds exactly the anchor's
    tensors). OUT may not be or hold an input, the current directory or the
    recipe's folder; --overwrite replaces only a previous model output.
    """
    with reported("merge"):
        from mergekit.merge import run_merge

        import layerseg_merge  # noqa: F401  (registers with mergekit)
        from layerseg_merge.hub import is_hub_id, resolve_model_path
        from layerseg_merge.method import METHOD_NAME
        from layerseg_merge.output import StagedOutput
        from layerseg_merge.recipe import load_recipe

        log = lambda message: click.echo(message, err=True)  # noqa: E731
        config, source = load_recipe(recipe, import_checkpoints=True, log=log)
        _check_device(merge_options)
        # Vision checkpoints have no tokenizer to copy.
        merge_options = merge_options.model_copy(update={"copy_tokenizer": False})
        merge_options.apply_global_options()
        inputs = [resolve_model_path(m.model.path, m.model.revision) if is_hub_id(m.model.path) else m.model.path
                  for m in config.referenced_models()]
        anchor = config.base_model.model if config.base_model else None
        anchor_dir = resolve_model_path(anchor.path, anchor.revision) if anchor else None
        to_checkpoint = out.lower().endswith(".pth")
        if to_checkpoint:
            from layerseg_merge.formats.mmseg import mmseg_settings

            if anchor_dir is None or mmseg_settings(anchor_dir) is None:
                raise click.ClickException(f"{out} ends in .pth, but the anchor {anchor} is not an mmseg checkpoint; "
                                           "give a folder as OUT (or anchor the merge on an imported .pth)")
        with StagedOutput(out, "file" if to_checkpoint else "dir", overwrite=overwrite, inputs=inputs, recipe=recipe,
                          log=log) as staged:
            merged = staged.workdir() if to_checkpoint else staged.staging
            run_merge(config, str(merged), options=merge_options, config_source=source)
            if config.merge_method == METHOD_NAME:
                check_output_names(merged, anchor_dir)
            if recalibrate_data:
                from layerseg_merge.tools.recalibrate import recalibrate_directory

                done = recalibrate_directory(merged, recalibrate_data, merged, staged.workdir("bn"),
                                             images=recalibrate_images, device=str(merge_options.device or "auto"))
                log("the merge has no BatchNorm layers: nothing to recalibrate" if done is None else
                    f"BatchNorm statistics re-estimated on {done.images} images ({done.layers} layers)")
            if to_checkpoint:
                import torch

                from layerseg_merge.formats.mmseg import export_state

                torch.save(export_state(merged), staged.staging)
            staged.commit()
    click.echo(f"merged model written to {out}", err=True)
