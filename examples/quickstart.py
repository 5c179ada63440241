"""Quick start: merge three tiny SegFormers with layerwise_seg through the real mergekit-yaml.

Builds three small random SegFormers (standing in for UDA checkpoints trained
with different methods), writes a recipe, runs the unmodified `mergekit-yaml`
console script, loads the result with transformers and shows, per backbone
depth, how close the merged weights are to the anchor.

    python examples/quickstart.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForSemanticSegmentation, SegformerConfig, SegformerForSemanticSegmentation


def main() -> None:
    parser = argparse.ArgumentParser(description="layerwise_seg quick start")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="layerseg_quickstart_")))
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    config = SegformerConfig(depths=[2, 2, 2, 2], hidden_sizes=[16, 32, 64, 128],
                             decoder_hidden_size=64, num_labels=19)
    models = []
    for seed, name in enumerate(["anchor_dacs", "hrda", "mic"]):
        torch.manual_seed(seed)
        SegformerForSemanticSegmentation(config).save_pretrained(out / name)
        models.append(out / name)
    recipe = out / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "layerwise_seg",
        "base_model": str(models[0]),
        "models": [{"model": str(m)} for m in models],
        "parameters": {"uniform_until": 0.5, "anchor_max": 1.0, "schedule": "linear", "heads": "anchor"},
    }))
    merged = out / "merged"
    mergekit_yaml = shutil.which("mergekit-yaml") or str(Path(sys.executable).parent / "mergekit-yaml")
    subprocess.run([mergekit_yaml, str(recipe), str(merged), "--no-copy-tokenizer", "--quiet"], check=True)

    model = AutoModelForSemanticSegmentation.from_pretrained(merged).eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(1, 3, 128, 128)).logits
    print(f"merged {len(models)} models into {merged}: {type(model).__name__}, logits {tuple(logits.shape)}")

    from layerseg_merge.architectures import layout_of

    layout = layout_of(str(merged))
    result = load_file(merged / "model.safetensors")
    inputs = [load_file(m / "model.safetensors") for m in models]
    print("depth  anchor share (0.33 = plain mean of 3, 1.00 = the anchor's own weights)")
    for layer in layout.layers:
        info = next(t for t in layer if len(t.shape) >= 2)
        anchor = inputs[0][info.name]
        rest = sum(x[info.name] for x in inputs[1:]) / (len(inputs) - 1)
        share = float(((result[info.name] - rest) * (anchor - rest)).sum() / ((anchor - rest) ** 2).sum())
        print(f"{info.depth:5.2f}  {share:5.2f}   {info.name}")


if __name__ == "__main__":
    main()
