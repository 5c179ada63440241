"""Tiny random models and a merge-and-check helper for mergekit's tests.

Written for the layerseg-merge patch series: the mergekit 0.1.5 sdist ships
``tests/`` without this module. Every model is small enough to build in well
under a second, is seeded from its folder name (the same folder name gives the
same weights, different names give different ones) and is saved as float32
safetensors.
"""

import os
import tempfile
import zlib
from typing import Callable, Optional

import torch
from transformers import (
    AutoConfig,
    CLIPVisionConfig,
    GPT2Config,
    GraniteConfig,
    LlamaConfig,
    LlavaConfig,
    PretrainedConfig,
)

from mergekit.architecture import arch_info_for_config, get_architecture_info
from mergekit.config import MergeConfiguration
from mergekit.io import LazyTensorLoader
from mergekit.merge import run_merge
from mergekit.options import MergeOptions

# The decoder size of every pico model: 2 layers, hidden size 32, grouped-query attention.
PICO_DECODER = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def _save_random(config: PretrainedConfig, model_class, path) -> str:
    """Build ``model_class(config)`` with a seed taken from ``path`` and save it."""
    path = str(path)
    os.makedirs(path, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(os.path.basename(path).encode()))
        model = model_class(config)
    model.save_pretrained(path)
    return path


def make_picollama(path, vocab_size: int = 64) -> str:
    """A 2-layer Llama with hidden size 32."""
    from transformers import LlamaForCausalLM

    config = LlamaConfig(**PICO_DECODER, vocab_size=vocab_size, tie_word_embeddings=False)
    return _save_random(config, LlamaForCausalLM, path)


def make_picogranite(path, vocab_size: int = 64) -> str:
    """A 2-layer Granite (Llama plus Granite's scaling multipliers)."""
    from transformers import GraniteForCausalLM

    config = GraniteConfig(**PICO_DECODER, vocab_size=vocab_size, tie_word_embeddings=False)
    return _save_random(config, GraniteForCausalLM, path)


def make_gpt2size(path) -> str:
    """GPT-2's layer count (12 blocks) at a tiny width."""
    from transformers import GPT2LMHeadModel

    config = GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=12, n_head=4)
    return _save_random(config, GPT2LMHeadModel, path)


def make_picoLlaVa(path) -> str:
    """A LLaVA: a 2-layer CLIP vision tower, a projector and a 2-layer Llama."""
    from transformers import LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=28,
        patch_size=14,
        projection_dim=32,
    )
    text = LlamaConfig(**PICO_DECODER, vocab_size=64)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=63)
    return _save_random(config, LlavaForConditionalGeneration, path)


def run_and_check_merge(
    config: MergeConfiguration,
    validate: Optional[Callable[[str], None]] = None,
    auto_arch: bool = False,
    check_nan: bool = True,
    options: Optional[MergeOptions] = None,
) -> None:
    """Merge ``config`` into a temporary folder and check what was written.

    The output must load as a transformers config, hold every required weight
    of its architecture (a JSON definition, or the inferred one when
    ``auto_arch``) and, unless ``check_nan`` is off, only finite values.
    ``validate`` then gets the output folder for the test's own checks.
    """
    options = options or MergeOptions(quiet=True)
    with tempfile.TemporaryDirectory() as out_path:
        run_merge(config, out_path=out_path, options=options)
        model_config = AutoConfig.from_pretrained(out_path)
        if auto_arch:
            arch_info = get_architecture_info(config, options)
        else:
            arch_info = arch_info_for_config(model_config)
            assert arch_info is not None, "no architecture definition for the output"

        loader = LazyTensorLoader.from_disk(out_path)
        names = set(loader.index.tensor_paths)
        for weight in arch_info.all_weights(model_config):
            found = [n for n in (weight.name, *(weight.aliases or ())) if n in names]
            assert found or weight.optional, f"output lacks {weight.name}"
        if check_nan:
            for name in names:
                tensor = loader.get_tensor(name)
                if tensor.is_floating_point():
                    assert torch.isfinite(tensor).all(), f"{name} is not finite"
        if validate is not None:
            validate(out_path)
