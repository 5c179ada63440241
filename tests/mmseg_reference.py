"""Shared by the mmseg tests: small checkpoints, CLI helpers, and the DAFormer / HRDA forward passes written out.

The functional forwards are independent of ``layerseg_merge``: the MiT, the DAFormer head and HRDA's
released test procedure computed from the checkpoint's own tensors with plain torch functions.
"""

import torch
import torch.nn.functional as F
from click.testing import CliRunner
from mmseg_fixtures import TINY_HEADS, MiTSpec, daformer_checkpoint, save_checkpoint

from layerseg_merge.cli import main

SMALL = MiTSpec((8, 16, 40, 64), (1, 2, 1, 1), (1, 2, 5, 8), (4, 2, 1, 1), (2, 2, 2, 2))


def small_checkpoint(tmp_path, kind, seed=0, container="training", prefixes=None, name=None):
    data = daformer_checkpoint(kind, variant=SMALL, sizes=TINY_HEADS, container=container, prefixes=prefixes,
                               seed=seed)
    return save_checkpoint(data, tmp_path / f"{name or kind}_{seed}.pth"), data


def student(data) -> dict:
    """The student's tensors (model.*) without prefix; a stripped checkpoint as it is."""
    state = data.get("state_dict", data)
    if any(k.startswith("model.") for k in state):
        return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return dict(state)


def run(*args, env=None):
    return CliRunner().invoke(main, [*map(str, args)], env=env)


def import_(checkpoint, out, *options):
    result = run("import", "mmseg", checkpoint, out, *options)
    assert result.exit_code == 0, result.output
    return out, result.output


def mit_forward(state: dict, image: torch.Tensor) -> list[torch.Tensor]:
    """The original MiT, written with functional ops on the original checkpoint names (independent of the
    import's name map, kv split and transformers)."""
    features, x = [], image
    for s, (heads, sr) in enumerate(zip(SMALL.num_heads, SMALL.sr_ratios), start=1):
        p = f"backbone.patch_embed{s}"
        weight = state[f"{p}.proj.weight"]
        x = F.conv2d(x, weight, state[f"{p}.proj.bias"], stride=4 if s == 1 else 2, padding=weight.shape[-1] // 2)
        batch, channels, height, width = x.shape
        x = F.layer_norm(x.flatten(2).transpose(1, 2), (channels,), state[f"{p}.norm.weight"],
                         state[f"{p}.norm.bias"], eps=1e-5)
        for j in range(SMALL.depths[s - 1]):
            b = f"backbone.block{s}.{j}"
            h = F.layer_norm(x, (channels,), state[f"{b}.norm1.weight"], state[f"{b}.norm1.bias"], eps=1e-6)
            q = F.linear(h, state[f"{b}.attn.q.weight"], state[f"{b}.attn.q.bias"])
            context = h
            if sr > 1:
                grid = h.transpose(1, 2).reshape(batch, channels, height, width)
                context = F.conv2d(grid, state[f"{b}.attn.sr.weight"], state[f"{b}.attn.sr.bias"], stride=sr)
                context = F.layer_norm(context.flatten(2).transpose(1, 2), (channels,),
                                       state[f"{b}.attn.norm.weight"], state[f"{b}.attn.norm.bias"], eps=1e-5)
            kv = F.linear(context, state[f"{b}.attn.kv.weight"], state[f"{b}.attn.kv.bias"])
            kv = kv.reshape(batch, -1, 2, heads, channels // heads).permute(2, 0, 3, 1, 4)
            q = q.reshape(batch, -1, heads, channels // heads).transpose(1, 2)
            attention = (q @ kv[0].transpose(-2, -1) * (channels // heads) ** -0.5).softmax(-1)
            out = (attention @ kv[1]).transpose(1, 2).reshape(batch, -1, channels)
            x = x + F.linear(out, state[f"{b}.attn.proj.weight"], state[f"{b}.attn.proj.bias"])
            h = F.layer_norm(x, (channels,), state[f"{b}.norm2.weight"], state[f"{b}.norm2.bias"], eps=1e-6)
            h = F.linear(h, state[f"{b}.mlp.fc1.weight"], state[f"{b}.mlp.fc1.bias"])
            hidden = h.shape[-1]
            h = F.conv2d(h.transpose(1, 2).reshape(batch, hidden, height, width),
                         state[f"{b}.mlp.dwconv.dwconv.weight"], state[f"{b}.mlp.dwconv.dwconv.bias"], padding=1,
                         groups=hidden)
            h = F.gelu(h.flatten(2).transpose(1, 2))
            x = x + F.linear(h, state[f"{b}.mlp.fc2.weight"], state[f"{b}.mlp.fc2.bias"])
        x = F.layer_norm(x, (channels,), state[f"backbone.norm{s}.weight"], state[f"backbone.norm{s}.bias"], eps=1e-6)
        x = x.transpose(1, 2).reshape(batch, channels, height, width)
        features.append(x)
    return features


def conv_bn_relu(x, state, name, **conv):
    x = F.conv2d(x, state[f"{name}.conv.weight"], **conv)
    x = F.batch_norm(x, state[f"{name}.bn.running_mean"], state[f"{name}.bn.running_var"],
                     state[f"{name}.bn.weight"], state[f"{name}.bn.bias"], training=False, eps=1e-5)
    return F.relu(x)


def daformer_head_forward(state: dict, features, prefix="decode_head.", fusion="aspp"):
    embedded = []
    for i, f in enumerate(features):
        e = F.linear(f.flatten(2).transpose(1, 2), state[f"{prefix}embed_layers.{i}.proj.weight"],
                     state[f"{prefix}embed_layers.{i}.proj.bias"])
        e = e.transpose(1, 2).reshape(f.shape[0], -1, *f.shape[2:])
        embedded.append(F.interpolate(e, size=features[0].shape[2:], mode="bilinear", align_corners=False))
    x = torch.cat(embedded, 1)  # stage order 0..3
    if fusion == "aspp":
        branches = [conv_bn_relu(x, state, f"{prefix}fuse_layer.aspp_modules.0")]
        for i, d in ((1, 6), (2, 12), (3, 18)):
            a = f"{prefix}fuse_layer.aspp_modules.{i}"
            t = conv_bn_relu(x, state, f"{a}.depthwise_conv", padding=d, dilation=d, groups=x.shape[1])
            branches.append(conv_bn_relu(t, state, f"{a}.pointwise_conv"))
        x = conv_bn_relu(torch.cat(branches, 1), state, f"{prefix}fuse_layer.bottleneck", padding=1)
    else:
        x = conv_bn_relu(x, state, f"{prefix}fuse_layer")
    return F.conv2d(x, state[f"{prefix}conv_seg.weight"], state[f"{prefix}conv_seg.bias"])


def hrda_reference(state, image, lr_scale, crop, stride, hr_crop, hr_stride):
    """HRDA's released test procedure written out with loops (windows clamped as mmseg does)."""
    def starts(size, c, s):
        return [max(min(i * s, size - c), 0) for i in range(max(size - c + s - 1, 0) // s + 1)]

    def head(features):
        return daformer_head_forward(state, features, "decode_head.head.")

    height, width = image.shape[2:]
    total = torch.zeros(image.shape[0], 19, height, width)
    count = torch.zeros(1, 1, height, width)
    for y in starts(height, crop, stride):
        for x in starts(width, crop, stride):
            window = image[:, :, y:y + crop, x:x + crop]
            h, w = window.shape[2:]
            low = F.interpolate(window, scale_factor=lr_scale, mode="bilinear", align_corners=False)
            low_features = mit_forward(state, low)
            low_logits = head(low_features)
            high = torch.zeros(image.shape[0], 19, h // 4, w // 4)
            seen = torch.zeros(1, 1, h // 4, w // 4)
            for cy in starts(h, hr_crop, hr_stride):
                for cx in starts(w, hr_crop, hr_stride):
                    logits = head(mit_forward(state, window[:, :, cy:cy + hr_crop, cx:cx + hr_crop]))
                    high[:, :, cy // 4:(cy + hr_crop) // 4, cx // 4:(cx + hr_crop) // 4] += logits
                    seen[:, :, cy // 4:(cy + hr_crop) // 4, cx // 4:(cx + hr_crop) // 4] += 1
            high = high / seen
            attention = torch.sigmoid(daformer_head_forward(state, low_features, "decode_head.scale_attention.",
                                                            fusion="conv1"))
            up = F.interpolate((1 - attention) * low_logits, scale_factor=1 / lr_scale, mode="bilinear",
                               align_corners=False)
            attention = F.interpolate(attention, scale_factor=1 / lr_scale, mode="bilinear", align_corners=False)
            fused = F.interpolate(attention * high + up, size=(h, w), mode="bilinear", align_corners=False)
            total[:, :, y:y + h, x:x + w] += fused
            count[:, :, y:y + h, x:x + w] += 1
    return total / count
