"""Bit-identity check between two `layerwise_seg` merges of the same recipe (used by check.sh).

    python bit_identity.py prepare DIR      three tiny SegFormer models (random BatchNorm statistics) and
                                            DIR/recipe.yaml (`buffers: pooled`, heads merged by the schedule)
    python bit_identity.py compare A B      exit 0 iff the merged checkpoints A and B hold the same tensor
                                            names, dtypes and values, bit for bit
"""

from __future__ import annotations

import sys
from pathlib import Path

RECIPE = """\
merge_method: layerwise_seg
base_model: {m0}
models:
  - model: {m0}
    parameters: {{weight: 2.0}}
  - model: {m1}
  - model: {m2}
    parameters: {{weight: 0.5}}
parameters:
  uniform_until: 0.25
  anchor_max: 0.9
  schedule: cosine
  heads: schedule
  buffers: pooled
"""


def prepare(root: Path) -> None:
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(depths=[1, 2, 1, 1], sr_ratios=[8, 4, 2, 1], hidden_sizes=[8, 16, 24, 32],
                             num_attention_heads=[1, 2, 3, 4], mlp_ratios=[2, 2, 2, 2], decoder_hidden_size=16,
                             num_labels=5)
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = SegformerForSemanticSegmentation(config)
        norm = model.decode_head.batch_norm
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.num_batches_tracked.fill_(100 * (seed + 1))
        path = root / f"m{seed}"
        model.save_pretrained(path)
        paths.append(path)
    (root / "recipe.yaml").write_text(RECIPE.format(**{f"m{i}": p for i, p in enumerate(paths)}))


def compare(a: Path, b: Path) -> int:
    import torch
    from safetensors.torch import load_file

    def tensors(path: Path) -> dict:
        out = {}
        for shard in sorted(path.glob("*.safetensors")):
            out.update(load_file(shard))
        return out

    left, right = tensors(a), tensors(b)
    if not left or left.keys() != right.keys():
        print(f"tensor names differ: {sorted(left.keys() ^ right.keys())[:5]}")
        return 1
    for name in sorted(left):
        x, y = left[name], right[name]
        same_bits = x.dtype == y.dtype and x.shape == y.shape and torch.equal(
            x.contiguous().flatten().view(torch.uint8), y.contiguous().flatten().view(torch.uint8))
        if not same_bits:
            print(f"{name}: differs ({x.dtype} {list(x.shape)} vs {y.dtype} {list(y.shape)})")
            return 1
    print(f"bit-identical: {len(left)} tensors")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["prepare"] and len(sys.argv) == 3:
        prepare(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["compare"] and len(sys.argv) == 4:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
