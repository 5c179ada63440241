"""``layerseg import mmseg`` and ``layerseg export mmseg``: DAFormer / HRDA / MIC / EDAPS checkpoints."""

from __future__ import annotations

import click

from layerseg_merge.cli.options import parse_test_scale
from layerseg_merge.cli.reporting import reported


@click.group("import")
def import_group() -> None:
    """Import checkpoints of other toolkits as model directories."""


@import_group.command("mmseg")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--weights", type=click.Choice(["student", "teacher"]), default="student", show_default=True,
              help="student = model.* (what the papers evaluate); teacher = ema_model.*")
@click.option("--num-heads", default=None, help="MiT attention heads per stage (not stored in the weights); "
              "default 1,2,5,8 as in every MiT-B0..B5")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="the model's mmseg config (the JSON shipped with the released checkpoints, or a .py without "
              "_base_): its test pipeline and test_cfg are stored for `layerseg eval`; default: the checkpoint's "
              "meta config, else the released GTA->Cityscapes settings")
@click.option("--test-scale", default=None, help="W,H: the test img_scale (mmseg MultiScaleFlipAug), e.g. 960,540 "
              "for DAFormer's ACDC config; overrides the config's")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it holds a previous model output.")
def import_mmseg(checkpoint: str, out: str, weights: str, num_heads: str | None, config_file: str | None,
                 test_scale: str | None, overwrite: bool) -> None:
    """Import an mmseg 0.x checkpoint (DAFormer, HRDA, MIC, EDAPS, SegFormer) into a model directory.

    Reads the file with torch.load(weights_only=True) (never unpickling code), detects the
    kind and the MiT variant, and writes OUT: config.json, model.safetensors (the MiT backbone
    under transformers' SegFormer names, the heads under their own) and preprocessor_config.json.
    """
    with reported("import"):
        from layerseg_merge.formats.mmseg import convert, write_model_dir
        from layerseg_merge.io.output import StagedOutput

        heads = tuple(int(v) for v in num_heads.split(",")) if num_heads else None
        if heads is not None and len(heads) != 4:
            raise click.ClickException("--num-heads takes 4 numbers, e.g. 1,2,5,8")
        scale = parse_test_scale(test_scale)
        imported = convert(checkpoint, weights, heads, config_file, scale)
        click.echo(f"found {imported.found.describe()} ({weights}, {imported.prefix or 'unprefixed '}* weights)",
                   err=True)
        for note in imported.notes:
            click.echo(note, err=True)
        with StagedOutput(out, "dir", overwrite=overwrite, inputs=[checkpoint],
                          log=lambda message: click.echo(message, err=True)) as staged:
            write_model_dir(imported, staged.staging)
            staged.commit()
    click.echo(f"model directory written to {out}", err=True)


@click.group("export")
def export_group() -> None:
    """Export model directories to other toolkits' checkpoint formats."""


@export_group.command("mmseg")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is a previous checkpoint file.")
def export_mmseg(model: str, out: str, overwrite: bool) -> None:
    """Write an imported (or merged) model back as an mmseg checkpoint: {meta, state_dict} with model.* keys.

    Original names (attn.kv re-joined) and the imported meta; a merge keeps its anchor's meta without that run's
    seed, iteration and environment, and records meta['layerseg_merge']: its recipe, inputs, anchor and versions.
    Loadable with torch.load(weights_only=True) and by the DAFormer / HRDA / MIC / EDAPS repositories' tools/test.py.
    """
    with reported("export"):
        import torch

        from layerseg_merge.formats.mmseg import export_state
        from layerseg_merge.io.output import StagedOutput

        state = export_state(model)
        with StagedOutput(out, "file", overwrite=overwrite, inputs=[model]) as staged:
            torch.save(state, staged.staging)
            staged.commit()
    click.echo(f"checkpoint written to {out} ({len(state['state_dict'])} tensors)", err=True)
