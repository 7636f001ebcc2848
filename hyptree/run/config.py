"""yacs configuration for HypTree.

Two entry points:

* ``add_hyptree_config(cfg)`` adds our keys to an existing (Dassl) config, only
  where they are missing, so it composes with MaPLe's / PromptSRC's ``extend_cfg``
  in either order and never overrides a value a user already set.
* ``default_config()`` returns a complete standalone config (the few Dassl-style
  keys the library reads, plus ours) for use without Dassl.

Key layout (everything of ours lives under ``TRAINER.HYPTREE``)::

    TRAINER.HYPTREE.BACKBONE        coop | maple | promptsrc ("" = implied by the trainer)
    TRAINER.HYPTREE.PRESET          vanilla | protect | hyptree
    TRAINER.HYPTREE.CURVATURE.MODE  euclidean | shared | separate | intermediate
    TRAINER.HYPTREE.ALIGN.CROSS     entailment | angle | mmd

The backbones keep their own published sections (``TRAINER.COOP``,
``TRAINER.MAPLE``, ``TRAINER.PROMPTSRC``) with the same names and defaults as
the CoOp / MaPLe / PromptSRC repositories, so their yaml files load unchanged.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from hyptree.data.reference import REFERENCE_SPLIT
from hyptree.geometry.curvatures import CURVATURE_MODES
from hyptree.loss.objective import CROSS_TERMS, NODE_LOSS_REDUCTIONS, PRESETS
from hyptree.model.fusion import QK_INITS
from hyptree.model.prompts import BACKBONES
from hyptree.model.promptsrc import IMAGE_LOSS_WEIGHT, TEXT_LOSS_WEIGHT
from hyptree.run.dotted import cfg_get
from hyptree.tree.splits import SPLIT_MODES

#: LR schedule granularities (``TRAINER.HYPTREE.SCHEDULE``) and per-depth accuracy definitions
#: (``TRAINER.HYPTREE.EVAL.DEPTH_ACCURACY``).
SCHEDULES = ("dassl_per_epoch", "official_per_iteration")
DEPTH_ACCURACIES = ("ours", "official")

__all__ = [
    "add_hyptree_config",
    "default_config",
    "check_config",
    "configure_for_trainer",
    "resolve_backbone",
    "BACKBONES",
    "PRESETS",
    "CURVATURE_MODES",
    "CROSS_TERMS",
    "SPLIT_MODES",
    "SCHEDULES",
    "DEPTH_ACCURACIES",
]


def _hyptree_defaults() -> CN:
    h = CN()
    # coop | maple | promptsrc. Empty: implied by the trainer (CoOpHier -> coop,
    # MaPLeHypTree -> maple, PromptSRCHypTree -> promptsrc); a trainer refuses an
    # explicit value that contradicts it. ``default_config()`` (no trainer) uses maple.
    h.BACKBONE = ""
    h.PRESET = "hyptree"
    # Local CLIP checkpoint (OpenAI TorchScript/state dict, or OpenCLIP format such
    # as BioCLIP). Empty: MODEL.BACKBONE.NAME through clip.load.
    h.CLIP_PATH = ""
    # Image tree: class tokens taken after these blocks. Convention (the official code's):
    # 0-based block indices of a 12-block ViT (scaled to other depths), the token taken after
    # that block has run; the last entry is the final block. [4, 7, 11] = after the 5th, 8th
    # and 12th block, the official selection.
    h.LAYERS = [4, 7, 11]
    h.IMAGE_TREE = True  # False: every node sees the final image feature (ablation)
    # text pass: prompts per activation-checkpointed chunk (same gradients, memory bounded
    # by the chunk); 0: off; -1: auto (chunks of 256 above 2048 prompts, see docs/performance.md)
    h.TEXT_CHUNK = -1
    h.PASS_THROUGH = True  # False: raw intermediate class tokens (ablation)
    # Loss weights: J = W_CUT * L_cut + LAMBDA * L_node + ALPHA * (J_Tent + J_Vent + J_ent)
    h.W_CUT = 1.0
    h.LAMBDA = 0.5
    h.ALPHA = 0.5
    h.CUT_RATE = 0.1  # training tree cuts: each internal node kept folded with this rate
    # Node-centric loss reduction: per_sample (ours: mean over each sample's path nodes, then
    # over samples) | per_node (ProTeCt / official: per node over its samples, then over nodes)
    h.NODE_LOSS = "per_sample"
    # LR schedule granularity: dassl_per_epoch (Dassl's schedules, stepped each epoch) |
    # official_per_iteration (the official code: cosine stepped every iteration with
    # T_max = MAX_EPOCH iterations, periodic; see hyptree.run.training.official_lr_factor)
    h.SCHEDULE = "dassl_per_epoch"
    # Scaling of unit features before the exponential map (s_t, s_i).
    h.SCALE_TEXT = 10.0
    h.SCALE_IMAGE = 10.0
    h.CONE_K = 0.1  # entailment-cone constant K of the half-aperture

    h.CURVATURE = CN()
    h.CURVATURE.MODE = "intermediate"
    h.CURVATURE.C0 = 0.05  # init; learnable values clamped to [C0/10, 10*C0]
    h.CURVATURE.LEARN = True
    h.CURVATURE.KAPPA = 3.0  # radius rule factor of the intermediate-curvature solve (official: 1)
    # Initial c_t / c_i, absolute, inside [C0/10, 10*C0]; 0.0: start at C0 (official runs
    # mostly start one of them at C0/2)
    h.CURVATURE.C_TEXT_INIT = 0.0
    h.CURVATURE.C_IMAGE_INIT = 0.0

    h.FUSION = CN()
    h.FUSION.LEARN_VALUE = False  # True: trainable value projection (identity init, bias), official
    h.FUSION.QK_INIT = "identity"  # identity (ours) | xavier (official)

    h.ALIGN = CN()
    h.ALIGN.CROSS = "entailment"
    h.ALIGN.ANGLE = CN()
    h.ALIGN.ANGLE.TEMPERATURE = 0.07
    h.ALIGN.ANGLE.CENTROID_WEIGHT = 0.0  # Einstein-midpoint centroid regulariser
    h.ALIGN.MMD = CN()
    h.ALIGN.MMD.BANDWIDTHS = [0.5, 1.0, 2.0, 4.0]

    h.EVAL = CN()
    h.EVAL.NUM_CUTS = 25
    h.EVAL.CUT_RATES = [0.9, 0.7, 0.5, 0.3, 0.1]
    h.EVAL.CUT_SEED = 0
    h.EVAL.CUTS_FILE = ""  # JSON of node-name lists, or a ProTeCt treecut .pkl
    # Per-depth accuracy: ours | official (shallow leaves drop out of deeper depths;
    # candidates = every node at depth d, leaves included); see hyptree.eval.metrics
    h.EVAL.DEPTH_ACCURACY = "ours"

    h.TAXONOMY = CN()
    h.TAXONOMY.FILE = ""  # canonical '/'-separated path file overriding the dataset's tree
    return h


def _backbone_defaults() -> dict[str, CN]:
    """The backbones' own sections, as published by CoOp / MaPLe / PromptSRC."""
    coop = CN()
    coop.N_CTX = 16
    coop.CSC = False
    coop.CTX_INIT = ""
    coop.PREC = "fp16"
    coop.CLASS_TOKEN_POSITION = "end"

    maple = CN()
    maple.N_CTX = 2
    maple.CTX_INIT = "a photo of a"
    maple.PREC = "fp16"
    maple.PROMPT_DEPTH = 9

    src = CN()
    src.N_CTX_VISION = 4
    src.N_CTX_TEXT = 4
    src.CTX_INIT = "a photo of a"
    src.PREC = "fp16"
    src.PROMPT_DEPTH_VISION = 9
    src.PROMPT_DEPTH_TEXT = 9
    src.TEXT_LOSS_WEIGHT = TEXT_LOSS_WEIGHT  # ints, as PromptSRC declares them (yacs will not merge 25 into a float)
    src.IMAGE_LOSS_WEIGHT = IMAGE_LOSS_WEIGHT
    src.GPA_MEAN = 15
    src.GPA_STD = 1
    return {"COOP": coop, "MAPLE": maple, "PROMPTSRC": src}


def _add_missing(node: CN, defaults: CN) -> None:
    """Recursively copy keys of ``defaults`` that ``node`` lacks (never overwrite)."""
    for key, value in defaults.items():
        if key not in node:
            node[key] = value.clone() if isinstance(value, CN) else value
        elif isinstance(value, CN):
            if not isinstance(node[key], CN):
                raise TypeError(
                    f"config key {key!r} exists but is not a section; HypTree needs it to hold {sorted(value.keys())}"
                )
            _add_missing(node[key], value)


def add_hyptree_config(cfg: CN) -> CN:
    """Add HypTree's keys (and the backbones' sections) where missing. Returns ``cfg``."""
    if cfg.is_frozen():
        raise RuntimeError("add_hyptree_config needs an unfrozen config (call it before cfg.freeze())")
    if "TRAINER" not in cfg:
        cfg.TRAINER = CN()
    for name, section in _backbone_defaults().items():
        _add_missing(cfg.TRAINER, CN({name: section}))
    _add_missing(cfg.TRAINER, CN({"HYPTREE": _hyptree_defaults()}))
    if "DATASET" not in cfg:
        cfg.DATASET = CN()
    _add_missing(
        cfg.DATASET,
        # base/novel split of the taxonomy's leaves; its seed is fixed across run seeds
        CN({"SUBSAMPLE_CLASSES": "all", "SUBSAMPLE_SPLIT": "balanced", "SUBSAMPLE_SEED": 0}),
    )
    return cfg


def default_config() -> CN:
    """A complete standalone config (no Dassl), with Dassl's names for shared keys."""
    cfg = CN()
    cfg.SEED = 1
    cfg.OUTPUT_DIR = "./output"
    cfg.MODEL = CN()
    cfg.MODEL.BACKBONE = CN()
    cfg.MODEL.BACKBONE.NAME = "ViT-B/16"
    cfg.DATASET = CN()
    cfg.DATASET.ROOT = ""
    cfg.DATASET.NAME = ""
    cfg.DATASET.NUM_SHOTS = -1
    cfg.OPTIM = CN()
    cfg.OPTIM.NAME = "sgd"
    cfg.OPTIM.LR = 0.01
    cfg.OPTIM.MAX_EPOCH = 10
    cfg.TRAINER = CN()
    cfg.TRAINER.NAME = ""
    add_hyptree_config(cfg)
    cfg.TRAINER.HYPTREE.BACKBONE = "maple"  # no trainer to imply it
    return cfg


def check_config(cfg: CN) -> None:
    """Raise a ValueError naming the key for any choice outside its allowed values."""
    h = cfg.TRAINER.HYPTREE
    if not h.BACKBONE:
        raise ValueError(
            f"TRAINER.HYPTREE.BACKBONE is empty; set it to one of {', '.join(BACKBONES)} "
            f"(HypTree's Dassl trainers fill it in from their class)"
        )
    choices = [
        ("TRAINER.HYPTREE.BACKBONE", h.BACKBONE, BACKBONES),
        ("TRAINER.HYPTREE.PRESET", h.PRESET, PRESETS),
        ("TRAINER.HYPTREE.CURVATURE.MODE", h.CURVATURE.MODE, CURVATURE_MODES),
        ("TRAINER.HYPTREE.ALIGN.CROSS", h.ALIGN.CROSS, CROSS_TERMS),
        ("DATASET.SUBSAMPLE_SPLIT", cfg.DATASET.SUBSAMPLE_SPLIT, (*SPLIT_MODES, REFERENCE_SPLIT)),
        ("TRAINER.HYPTREE.NODE_LOSS", h.NODE_LOSS, NODE_LOSS_REDUCTIONS),
        ("TRAINER.HYPTREE.SCHEDULE", h.SCHEDULE, SCHEDULES),
        ("TRAINER.HYPTREE.FUSION.QK_INIT", h.FUSION.QK_INIT, QK_INITS),
        ("TRAINER.HYPTREE.EVAL.DEPTH_ACCURACY", h.EVAL.DEPTH_ACCURACY, DEPTH_ACCURACIES),
    ]
    for key, value, allowed in choices:
        if value not in allowed:
            raise ValueError(f"{key} = {value!r}; expected one of {', '.join(allowed)}")
    if h.CURVATURE.C0 <= 0:
        raise ValueError(f"TRAINER.HYPTREE.CURVATURE.C0 must be > 0, got {h.CURVATURE.C0}")
    if list(h.LAYERS) != sorted(set(h.LAYERS)) or any(p < 0 for p in h.LAYERS) or list(h.LAYERS)[-1:] != [11]:
        raise ValueError(
            f"TRAINER.HYPTREE.LAYERS = {list(h.LAYERS)}; expected strictly increasing 0-based block "
            f"indices of a 12-block ViT ending with the final block 11 (e.g. [4, 7, 11])"
        )
    c = h.CURVATURE
    for key in ("C_TEXT_INIT", "C_IMAGE_INIT"):
        if c[key] and not c.C0 / 10 <= c[key] <= 10 * c.C0:
            raise ValueError(
                f"TRAINER.HYPTREE.CURVATURE.{key} = {c[key]}; expected 0 (= C0) or a value in "
                f"[C0/10, 10*C0] = [{c.C0 / 10:g}, {10 * c.C0:g}]"
            )
    if h.TEXT_CHUNK < -1:
        raise ValueError(f"TRAINER.HYPTREE.TEXT_CHUNK = {h.TEXT_CHUNK}; expected -1 (auto), 0 (off) or a chunk size")
    if not 0.0 <= h.CUT_RATE <= 1.0:
        raise ValueError(f"TRAINER.HYPTREE.CUT_RATE = {h.CUT_RATE}; expected a rate in [0, 1]")
    _check_ranges(cfg)


# ---- value ranges checked before anything is built (errors name the key); LAYERS above


def _check_ranges(cfg: CN) -> None:
    """Numbers outside their meaningful range: a ``ValueError`` naming the key."""
    h = cfg.TRAINER.HYPTREE
    rules = [
        ("TRAINER.HYPTREE.W_CUT", h.W_CUT, lambda v: v >= 0, ">= 0 (a loss weight)"),
        ("TRAINER.HYPTREE.LAMBDA", h.LAMBDA, lambda v: v >= 0, ">= 0 (a loss weight)"),
        ("TRAINER.HYPTREE.ALPHA", h.ALPHA, lambda v: v >= 0, ">= 0 (a loss weight)"),
        ("TRAINER.HYPTREE.SCALE_TEXT", h.SCALE_TEXT, lambda v: v > 0, "> 0"),
        ("TRAINER.HYPTREE.SCALE_IMAGE", h.SCALE_IMAGE, lambda v: v > 0, "> 0"),
        ("TRAINER.HYPTREE.CONE_K", h.CONE_K, lambda v: v > 0, "> 0"),
        ("TRAINER.HYPTREE.CURVATURE.KAPPA", h.CURVATURE.KAPPA, lambda v: v > 0, "> 0"),
        ("TRAINER.HYPTREE.ALIGN.ANGLE.TEMPERATURE", h.ALIGN.ANGLE.TEMPERATURE, lambda v: v > 0, "> 0"),
        ("TRAINER.HYPTREE.ALIGN.ANGLE.CENTROID_WEIGHT", h.ALIGN.ANGLE.CENTROID_WEIGHT, lambda v: v >= 0, ">= 0"),
    ]
    if not h.EVAL.CUTS_FILE:
        rules.append(("TRAINER.HYPTREE.EVAL.NUM_CUTS", h.EVAL.NUM_CUTS, lambda v: v >= 1, ">= 1 (or set CUTS_FILE)"))
    max_epoch = cfg_get(cfg, "OPTIM.MAX_EPOCH", None)
    if max_epoch is not None:
        rules.append(("OPTIM.MAX_EPOCH", max_epoch, lambda v: v >= 1, ">= 1"))
    for key, value, ok, expected in rules:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ValueError(f"{key} = {value!r}; expected {expected}")


def resolve_backbone(configured: str, implied: str, trainer: str) -> str:
    """The backbone to use: ``implied`` by the trainer class, unless ``configured`` says
    otherwise, which is an error naming both (empty ``configured`` means "implied")."""
    if configured and configured != implied:
        raise ValueError(
            f"TRAINER.HYPTREE.BACKBONE is {configured!r} but trainer {trainer} is the "
            f"{implied!r} backbone; remove the key (the trainer sets it) or pick the trainer "
            f"of that backbone (coop: CoOpHier, maple: MaPLeHypTree, promptsrc: PromptSRCHypTree)"
        )
    return implied


def configure_for_trainer(cfg: CN, implied: str, trainer: str) -> None:
    """A trainer's config check, run once per build (Dassl's ``check_cfg`` hook calls it).

    Fills in ``TRAINER.HYPTREE.BACKBONE`` from the trainer class (:func:`resolve_backbone`;
    a frozen ``cfg`` is refrozen) and validates everything with :func:`check_config`.
    """
    h = cfg.TRAINER.HYPTREE
    backbone = resolve_backbone(h.BACKBONE, implied, trainer)
    if h.BACKBONE != backbone:
        frozen = cfg.is_frozen()
        cfg.defrost()
        h.BACKBONE = backbone
        if frozen:
            cfg.freeze()
    check_config(cfg)
