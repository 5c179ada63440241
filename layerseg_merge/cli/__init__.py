"""The ``layerseg`` command line. Subcommands import their (heavy) modules only when run.

``layerseg --help`` lists the commands from the table below, without importing
them, so it answers at once; a test checks that each summary matches its command.
"""

from __future__ import annotations

import importlib

import click

# name -> (module, attribute, one-line summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "merge": ("layerseg_merge.cli.merge", "merge",
              "Merge the models of RECIPE into OUT (takes every mergekit-yaml option)."),
    "architectures": ("layerseg_merge.cli.about", "architectures",
                      "List the supported hosts (config.json `architectures`) and backbones."),
    "recipes": ("layerseg_merge.cli.about", "recipes", "List the shipped recipes, or print one (NAME)."),
    "eval": ("layerseg_merge.cli.eval", "eval_command", "Run MODEL (a transformers directory) over a dataset and "
             "score it."),
    "score": ("layerseg_merge.cli.eval", "score", "Score predictions already on disk."),
    "predict": ("layerseg_merge.cli.predict", "predict_command",
                "Write MODEL's predictions on a split (labels not needed) as files, in a benchmark server's format."),
    "compare": ("layerseg_merge.cli.eval", "compare_command",
                "Print several report JSONs side by side (singles vs merges)."),
    "demo": ("layerseg_merge.cli.demo", "demo",
             "Merge the miniature UDA models with mergekit and compare singles, uniform and layerwise_seg."),
    "selftest": ("layerseg_merge.cli.about", "selftest", "Run the test suite shipped with the package (pytest)."),
    "analyze": ("layerseg_merge.cli.tools", "analyze_command",
                "Per layer, how far MODELS are from the anchor and from their mean (relative L2, cosine)."),
    "sweep": ("layerseg_merge.cli.tools", "sweep_command",
              "Choose the anchor and schedule of RECIPE on a validation split; write the best recipe."),
    "fit": ("layerseg_merge.cli.tools", "fit_command",
            "Learn RECIPE's coefficients per input and depth step on unlabelled target images."),
    "recalibrate": ("layerseg_merge.cli.tools", "recalibrate_command",
                    "Re-estimate MODEL's BatchNorm statistics on target images; every other tensor stays "
                    "bit-identical."),
    "import": ("layerseg_merge.cli.formats", "import_group", "Import checkpoints of other toolkits as model "
               "directories."),
    "export": ("layerseg_merge.cli.formats", "export_group", "Export model directories to other toolkits' "
               "checkpoint formats."),
    "cache": ("layerseg_merge.cli.cache", "cache_group", "List the import cache of .pth checkpoints (or clear it)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][2]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup)
@click.version_option(package_name="layerseg-merge")
def main() -> None:
    """Layer-wise model merging for semantic and panoptic segmentation."""
