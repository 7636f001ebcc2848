"""Shared test fixtures' building blocks: a small unbalanced tree and a tiny HierarchicalCLIP."""

import torch

from hyptree.model.loading import tiny_clip
from hyptree.run.config import default_config
from hyptree.run.factory import build_model

# unbalanced depths: leaves at depth 2 and 3
LINES = [
    "animal/bird/sparrow",
    "animal/bird/eagle",
    "animal/cat",
    "vehicle/car/sedan",
    "vehicle/car/coupe",
    "vehicle/boat",
]


def make_model(taxonomy, backbone="maple", preset="hyptree", **hyptree_keys):
    """A tiny-CLIP HierarchicalCLIP; ``hyptree_keys`` are TRAINER.HYPTREE overrides."""
    cfg = default_config()
    cfg.TRAINER.HYPTREE.BACKBONE = backbone
    cfg.TRAINER.HYPTREE.PRESET = preset
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 2  # the tiny model has 2 text blocks
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 2
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 3
    cfg.TRAINER.COOP.N_CTX = 4
    for key, value in hyptree_keys.items():
        cfg.merge_from_list([f"TRAINER.HYPTREE.{key}", value])
    torch.manual_seed(0)
    return build_model(cfg, tiny_clip(seed=0), taxonomy)


# the keys every results.json record has (the schema in docs/training.md)
RECORD_KEYS = {
    "metrics", "split", "tree", "dataset", "num_shots", "subsample", "trainer", "backbone", "preset",
    "curvature_mode", "cross", "image_tree", "pass_through", "seed", "config_hash", "epoch", "model_dir",
    "output_dir", "taxonomy", "taxonomy_source", "curvatures", "time",
}  # fmt: skip
