"""Procedural two-domain street scenes (64x64), with semantic and panoptic ground truth.

Classes: road, sky, building, vegetation (stuff); car, person (things, with instances).
Domains: ``source`` (clean synthetic rendering, GTA-like), ``source2`` (a second synthetic
renderer with another palette and camera height, SYNTHIA-like) and ``target`` (a real-ish
shift: textures, colour cast, darker light, blur and noise, lower horizon, bigger cars).
scikit-image's real textures (gravel, brick, grass) are used for the target when installed,
with a procedural fallback. Everything is seeded and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("road", "sky", "building", "vegetation", "car", "person")
THINGS = (4, 5)
SIZE = 64
PALETTES = {
    "source": {0: (90, 90, 95), 1: (120, 170, 235), 2: (170, 120, 90), 3: (60, 150, 60), 4: (200, 40, 40),
               5: (240, 200, 60)},
    "source2": {0: (70, 75, 85), 1: (150, 190, 240), 2: (140, 140, 150), 3: (40, 120, 70), 4: (60, 60, 200),
                5: (220, 150, 200)},
    "target": {0: (110, 105, 100), 1: (180, 190, 200), 2: (150, 110, 100), 3: (70, 110, 50), 4: (150, 60, 50),
               5: (200, 170, 120)},
}


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    semantic: np.ndarray  # (H, W) uint8 class index
    instances: np.ndarray  # (H, W) int32, 0 = none, else instance number (things only)


def _textures(rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Grey-level textures in [0, 1] for road, building, vegetation (real ones if scikit-image is there)."""
    try:
        from skimage import data

        sources = {0: data.gravel(), 2: data.brick(), 3: data.grass()}
        out = {}
        for cls, texture in sources.items():
            y, x = rng.integers(0, texture.shape[0] - SIZE, 2)
            out[cls] = texture[y:y + SIZE, x:x + SIZE].astype(np.float32) / 255.0
        return out
    except ImportError:  # procedural fallback: smoothed noise at several scales
        out = {}
        for cls, scale in ((0, 2), (2, 8), (3, 4)):
            noise = rng.random((SIZE // scale + 1, SIZE // scale + 1)).repeat(scale, 0).repeat(scale, 1)
            out[cls] = noise[:SIZE, :SIZE].astype(np.float32)
        return out


def _layout(rng: np.random.Generator, domain: str) -> tuple[np.ndarray, np.ndarray]:
    semantic = np.zeros((SIZE, SIZE), np.uint8)
    instances = np.zeros((SIZE, SIZE), np.int32)
    horizon = int(rng.integers(30, 40)) if domain == "target" else int(rng.integers(20, 30))
    if domain == "source2":
        horizon = int(rng.integers(16, 24))  # higher camera
    semantic[:horizon] = 1
    x = 0
    while x < SIZE:  # buildings along the horizon
        width = int(rng.integers(6, 16))
        top = int(rng.integers(max(horizon - 18, 2), horizon - 2))
        semantic[top:horizon, x:x + width] = 2
        x += width + int(rng.integers(0, 6))
    for _ in range(int(rng.integers(1, 4))):  # trees
        cx, cy, r = int(rng.integers(0, SIZE)), int(rng.integers(horizon - 8, horizon + 2)), int(rng.integers(3, 7))
        yy, xx = np.ogrid[:SIZE, :SIZE]
        semantic[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (yy < horizon + 3)] = 3
    semantic[horizon:] = np.where(semantic[horizon:] == 3, 3, 0)
    instance = 0
    car_scale = 1.4 if domain == "target" else 1.0
    for _ in range(int(rng.integers(1, 4))):
        w, h = int(rng.integers(9, 15) * car_scale), int(rng.integers(5, 8) * car_scale)
        y = int(rng.integers(horizon + 1, SIZE - h))
        x = int(rng.integers(0, SIZE - w))
        instance += 1
        semantic[y:y + h, x:x + w] = 4
        instances[y:y + h, x:x + w] = instance
    for _ in range(int(rng.integers(0, 4))):
        w, h = int(rng.integers(2, 4)), int(rng.integers(7, 12))
        y = int(rng.integers(horizon - 4, SIZE - h))
        x = int(rng.integers(0, SIZE - w))
        instance += 1
        semantic[y:y + h, x:x + w] = 5
        instances[y:y + h, x:x + w] = instance
    instances[~np.isin(semantic, THINGS)] = 0
    return semantic, instances


def render(semantic: np.ndarray, instances: np.ndarray, rng: np.random.Generator, domain: str) -> np.ndarray:
    palette = PALETTES[domain]
    image = np.zeros((SIZE, SIZE, 3), np.float32)
    for cls, colour in palette.items():
        image[semantic == cls] = colour
    for k in np.unique(instances[instances > 0]):  # per-instance colour jitter
        if domain == "source2":  # the second renderer paints every object in its own colour
            image[instances == k] = rng.integers(40, 230, 3)
        else:
            image[instances == k] *= rng.uniform(0.75, 1.25, 3)
    if domain == "target":
        for cls, texture in _textures(rng).items():
            mask = semantic == cls
            image[mask] *= (0.55 + 0.9 * texture[mask])[:, None]
        image *= rng.uniform(0.5, 0.8) * rng.uniform(0.8, 1.2, 3)  # darker, colour cast
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")  # 3x3 box blur
        image = sum(padded[dy:dy + SIZE, dx:dx + SIZE] for dy in range(3) for dx in range(3)) / 9
        image += rng.normal(0, 10, image.shape)
    else:
        image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_scene(seed: int, domain: str) -> Scene:
    rng = np.random.default_rng([seed, ["source", "source2", "target"].index(domain)])
    semantic, instances = _layout(rng, domain)
    return Scene(render(semantic, instances, rng, domain), semantic, instances)


def make_batch(seeds, domain: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scenes = [make_scene(int(s), domain) for s in seeds]
    return (np.stack([s.image for s in scenes]), np.stack([s.semantic for s in scenes]),
            np.stack([s.instances for s in scenes]))
