"""Tiny random models on disk, recipes, and an independent implementation of DESIGN.md §3."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file


def tiny_segformer_config(**overrides):
    from transformers import SegformerConfig

    values = dict(
        depths=[1, 2, 1, 1],
        sr_ratios=[4, 2, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 2, 2],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=16,
        num_labels=5,
    )
    values.update(overrides)
    return SegformerConfig(**values)


def randomize_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Give BatchNorm buffers distinct, non-trivial values (as after training)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.num_batches_tracked.fill_(int(seed) * 7 + 3)


def save_model(model_class, config, path: Path, seed: int, dtype=None) -> Path:
    torch.manual_seed(seed)
    model = model_class(config).eval()
    randomize_batchnorm(model, seed)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(path)
    return path


def tensors(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(file))
    return out


def write_recipe(path: Path, models: list[Path], anchor: Path, weights=None, **parameters) -> Path:
    entries = []
    for i, model in enumerate(models):
        entry: dict = {"model": str(model)}
        if weights is not None:
            entry["parameters"] = {"weight": weights[i]}
        entries.append(entry)
    recipe = {
        "merge_method": "layerwise_seg",
        "base_model": str(anchor),
        "models": entries,
    }
    if parameters:
        recipe["parameters"] = parameters
    path.write_text(yaml.safe_dump(recipe))
    return path


def expected_alpha(depth, u_a, uniform_until, anchor_max, shape):
    """alpha(d) of DESIGN.md §3, written independently of layerseg_merge.engine.schedule."""
    if depth <= uniform_until:
        return u_a
    r = (depth - uniform_until) / (1 - uniform_until)
    ramp = {"linear": r, "cosine": (1 - math.cos(math.pi * r)) / 2, "step": 1.0}[shape]
    return u_a + (anchor_max - u_a) * ramp


def expected_coefficients(weights, anchor, role, depth, *, uniform_until=0.5, anchor_max=1.0,
                          schedule="linear", heads="anchor"):
    total = sum(weights)
    u_a = weights[anchor] / total
    if role == "head":
        alpha = {"anchor": 1.0, "uniform": u_a,
                 "schedule": expected_alpha(1.0, u_a, uniform_until, anchor_max, schedule)}[heads]
    else:
        alpha = expected_alpha(depth, u_a, uniform_until, anchor_max, schedule)
    rest = total - weights[anchor]
    return [alpha if i == anchor else (1 - alpha) * w / rest for i, w in enumerate(weights)]


def segformer_depths(config) -> dict[str, tuple[str, float | None]]:
    """Role and depth of every SegFormer tensor name, from first principles (test oracle)."""
    blocks = [(s, b) for s, d in enumerate(config.depths) for b in range(d)]
    last = len(blocks) - 1
    index = {sb: i / last for i, sb in enumerate(blocks)}

    def role_depth(name: str):
        if not name.startswith(("segformer.", "encoder.")):
            return ("head", None)
        rest = name.split("encoder.", 1)[1]
        parts = rest.split(".")
        if parts[0] == "block":
            return ("backbone", index[(int(parts[1]), int(parts[2]))])
        stage = int(parts[1])
        if parts[0] == "patch_embeddings":
            return ("backbone", index[(stage, 0)])
        if parts[0] == "layer_norm":
            return ("backbone", index[(stage, config.depths[stage] - 1)])
        raise AssertionError(name)

    return role_depth


def tree_digest(*roots: Path) -> str:
    """sha256 over every file (relative path, mode, bytes) under ``roots``: proves inputs are untouched."""
    import hashlib
    import os

    digest = hashlib.sha256()
    for root in roots:
        root = Path(root)
        paths = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in paths:
            digest.update(str(path.relative_to(root.parent)).encode())
            if path.is_file():
                digest.update(oct(os.stat(path).st_mode).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def assert_one_line_error(result, *fragments: str) -> str:
    """A CLI failure shown as one line ``Error: ...`` with exit code 1 and no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


REPO = Path(__file__).resolve().parents[1]
# Tests that build the wheel or read repository files need a clone; `layerseg selftest` from an
# installed wheel runs everything else.
needs_clone = pytest.mark.skipif(
    not (REPO / "pyproject.toml").is_file(), reason="needs the source tree (a clone), not an installed wheel")


def mergekit_yaml(recipe, out, *options):
    """The real `mergekit-yaml` command, run in this process (no interpreter start, no mergekit re-import).

    Returns (returncode, text): the exit code, and what it printed plus its error. A few tests still run
    the console script in a subprocess to prove the installed entry point and the start-up hook.
    """
    from click.testing import CliRunner
    from mergekit.scripts.run_yaml import main

    import layerseg_merge  # noqa: F401  (registers the plugin, as the start-up hook would)

    result = CliRunner().invoke(main, [str(recipe), str(out), "--no-copy-tokenizer", "--quiet", *options])
    error = "" if result.exception is None or isinstance(result.exception, SystemExit) else str(result.exception)
    return result.exit_code, f"{result.output}{error}"


def free_port() -> int:
    """A TCP port no one listens on now (torchrun's rendezvous; tests may run in parallel)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
