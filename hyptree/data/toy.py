"""ToyHier: a small generated three-level image taxonomy for CPU smoke runs.

Hierarchy ``shape -> coloured shape -> patterned coloured shape``::

    circle/red_circle/red_circle_plain
    circle/red_circle/red_circle_striped
    ...
    triangle/blue_triangle/blue_triangle_striped

3 shapes x 3 colours x 2 patterns = 18 leaves; every node name is unique tree-wide
(``red_circle`` rather than ``red``), as ``Taxonomy`` requires. Images are drawn with
PIL/numpy: a noisy random background, the shape at a random position, size and rotation
with a jittered colour, and for ``striped`` a darker stripe pattern of random orientation
and period. Every level is learnable from pixels but none is trivially constant.

Files (``$DATA/toy_hier``, see ``hyptree.data.readers.LAYOUTS["toy_hier"]``)::

    images/{train,val,test}/<leaf>/<nnnn>.png
    classnames.txt        one leaf name per line, label order
    hierarchy.txt         canonical '/'-separated root-to-leaf lines (root implicit)
    split_toy_hier.json   CoOp-format split (read back with hyptree.data.readers.read_coop_split)
    .complete             generation parameters, written last

Generation is deterministic given its parameters (each image has its own RNG seeded by
``(seed, split, class, index)``) and happens once; calling again with the same
parameters only reads the index, with different parameters regenerates the folder.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from typing import Dict, List, Tuple

import numpy as np

from hyptree.data.readers import COMPLETE_MARKER, Item, SplitData, read_coop_split, write_coop_split
from hyptree.utils.files import atomic_write_bytes, atomic_write_json

__all__ = ["SHAPES", "COLOURS", "PATTERNS", "TOY_DIR", "toy_classes", "toy_hierarchy_lines",
           "render_toy_image", "make_toy_dataset"]

SHAPES = ("circle", "square", "triangle")
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 45, 40),
    "green": (40, 165, 60),
    "blue": (45, 75, 215),
}
PATTERNS = ("plain", "striped")
TOY_DIR = "toy_hier"
TOY_SPLIT = "split_toy_hier.json"
_SPLITS = ("train", "val", "test")


def toy_classes() -> List[Tuple[str, str, str]]:
    """``(shape, colour, pattern)`` per leaf, in label order (shape-major)."""
    return [(s, c, p) for s in SHAPES for c in COLOURS for p in PATTERNS]


def _leaf_name(shape: str, colour: str, pattern: str) -> str:
    return f"{colour}_{shape}_{pattern}"


def toy_hierarchy_lines() -> List[str]:
    """Canonical hierarchy lines ``shape/colour_shape/colour_shape_pattern`` in label order."""
    return [f"{s}/{c}_{s}/{_leaf_name(s, c, p)}" for s, c, p in toy_classes()]


def _shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (size, size) mask of one shape with random centre, radius and rotation."""
    from PIL import Image, ImageDraw

    radius = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        corners = 4 if shape == "square" else 3
        # a square's circumradius is larger than its half side; shrink it so areas stay comparable
        r = radius * (1.15 if shape == "square" else 1.3)
        pts = [
            (cx + r * math.cos(angle + 2 * math.pi * k / corners), cy + r * math.sin(angle + 2 * math.pi * k / corners))
            for k in range(corners)
        ]
        draw.polygon(pts, fill=255)
    return np.asarray(canvas) > 127


def render_toy_image(
    shape: str, colour: str, pattern: str, rng: np.random.Generator, size: int = 32, return_mask: bool = False
):
    """One ToyHier image as an (size, size, 3) uint8 array (and the shape's boolean
    (size, size) mask when ``return_mask``)."""
    if shape not in SHAPES or colour not in COLOURS or pattern not in PATTERNS:
        raise ValueError(f"unknown toy class ({shape}, {colour}, {pattern})")
    base = rng.uniform(70, 185) + rng.uniform(-15, 15, size=3)  # greyish, slightly tinted
    img = base + rng.normal(0, 14, size=(size, size, 3))
    mask = _shape_mask(shape, size, rng)
    fill = np.array(COLOURS[colour], dtype=float) + rng.uniform(-25, 25, size=3)
    img[mask] = fill
    if pattern == "striped":
        period = rng.uniform(3.5, 6.0)
        theta = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:size, 0:size]
        phase = (xx * math.cos(theta) + yy * math.sin(theta)) / period + rng.uniform(0, 1)
        stripes = (phase % 1.0) < 0.5
        img[mask & stripes] = fill * 0.4
    img += rng.normal(0, 6, size=img.shape)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return (out, mask) if return_mask else out


def make_toy_dataset(
    root: str, seed: int = 0, n_train: int = 8, n_val: int = 4, n_test: int = 6, image_size: int = 32
) -> SplitData:
    """Generate ToyHier under ``root/toy_hier`` if needed and return its splits.

    ``n_*`` are images per class and split. ``classnames`` are the leaf names;
    ``hierarchy_lines`` the canonical lines (:func:`toy_hierarchy_lines`).
    """
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if min(counts.values()) < 0 or max(counts.values()) < 1 or image_size < 8:
        raise ValueError(f"make_toy_dataset: need non-negative counts (one positive) and image_size >= 8, "
                         f"got {counts}, {image_size}")
    params = {"seed": int(seed), "counts": counts, "image_size": int(image_size), "version": 1}
    dataset_dir = os.path.join(root, TOY_DIR)
    image_dir = os.path.join(dataset_dir, "images")
    marker = os.path.join(dataset_dir, COMPLETE_MARKER)
    split_json = os.path.join(dataset_dir, TOY_SPLIT)
    current = None
    if os.path.isfile(marker):
        with open(marker, "r", encoding="utf-8") as f:
            current = json.load(f)
    if current != params:
        _generate(dataset_dir, image_dir, split_json, marker, params)
    splits = read_coop_split(split_json, image_dir)
    classnames = [_leaf_name(*c) for c in toy_classes()]
    return SplitData(splits["train"], splits["val"], splits["test"], classnames, list(classnames),
                     toy_hierarchy_lines())


def _generate(dataset_dir: str, image_dir: str, split_json: str, marker: str, params: dict) -> None:
    from PIL import Image

    if os.path.exists(marker):
        os.remove(marker)
    if os.path.isdir(image_dir):
        shutil.rmtree(image_dir)
    classes = toy_classes()
    splits: Dict[str, List[Item]] = {s: [] for s in _SPLITS}
    for split_id, split in enumerate(_SPLITS):
        for label, (shape, colour, pattern) in enumerate(classes):
            leaf = _leaf_name(shape, colour, pattern)
            folder = os.path.join(image_dir, split, leaf)
            os.makedirs(folder, exist_ok=True)
            for i in range(params["counts"][split]):
                rng = np.random.default_rng([params["seed"], split_id, label, i])
                arr = render_toy_image(shape, colour, pattern, rng, params["image_size"])
                path = os.path.join(folder, f"{i:04d}.png")
                Image.fromarray(arr).save(path, format="PNG")
                splits[split].append(Item(path, label, leaf))
    names = [_leaf_name(*c) for c in classes]
    atomic_write_bytes(os.path.join(dataset_dir, "classnames.txt"), ("\n".join(names) + "\n").encode())
    atomic_write_bytes(os.path.join(dataset_dir, "hierarchy.txt"), ("\n".join(toy_hierarchy_lines()) + "\n").encode())
    write_coop_split(splits, split_json, image_dir)
    atomic_write_json(marker, params)
