"""The one place that turns a yacs config into HypTree objects.

Everything below ``hyptree.run`` takes plain arguments; this module reads the keys
(``add_hyptree_config`` defines them; ``check_config`` validates them once per build, from
the trainer's ``check_cfg`` through ``configure_for_trainer``) and calls the constructors:

* :func:`build_model` - a :class:`~hyptree.model.hierarchical.HierarchicalCLIP`;
* :func:`prompt_options`, :func:`objective_settings`, :func:`curvature_options` - its parts;
* :func:`dataset_options` - the keyword arguments of
  :func:`~hyptree.data.build.build_hierarchical_dataset`.
"""

from __future__ import annotations

from hyptree.loss.objective import ObjectiveSettings
from hyptree.model.hierarchical import HierarchicalCLIP
from hyptree.run.dotted import require_keys
from hyptree.tree.taxonomy import Taxonomy

__all__ = ["build_model", "prompt_options", "objective_settings", "curvature_options", "dataset_options"]


def prompt_options(cfg, backbone: str) -> dict:
    """The keyword options of ``build_prompt_learner`` from the backbone's own section."""
    if backbone == "coop":
        c = cfg.TRAINER.COOP
        return dict(n_ctx=c.N_CTX, ctx_init=c.CTX_INIT)
    if backbone == "maple":
        c = cfg.TRAINER.MAPLE
        return dict(n_ctx=c.N_CTX, ctx_init=c.CTX_INIT, depth=c.PROMPT_DEPTH)
    c = cfg.TRAINER.PROMPTSRC
    return dict(
        n_ctx_text=c.N_CTX_TEXT,
        n_ctx_vision=c.N_CTX_VISION,
        ctx_init=c.CTX_INIT,
        depth_text=c.PROMPT_DEPTH_TEXT,
        depth_vision=c.PROMPT_DEPTH_VISION,
        text_weight=c.TEXT_LOSS_WEIGHT,
        image_weight=c.IMAGE_LOSS_WEIGHT,
    )


def objective_settings(cfg) -> ObjectiveSettings:
    h = cfg.TRAINER.HYPTREE
    return ObjectiveSettings(
        preset=h.PRESET,
        w_cut=h.W_CUT,
        lam=h.LAMBDA,
        alpha=h.ALPHA,
        cut_rate=h.CUT_RATE,
        scale_text=h.SCALE_TEXT,
        scale_image=h.SCALE_IMAGE,
        cone_k=h.CONE_K,
        cross=h.ALIGN.CROSS,
        angle_temperature=h.ALIGN.ANGLE.TEMPERATURE,
        centroid_weight=h.ALIGN.ANGLE.CENTROID_WEIGHT,
        mmd_bandwidths=tuple(h.ALIGN.MMD.BANDWIDTHS),
        node_loss=h.NODE_LOSS,
    )


def curvature_options(cfg) -> dict:
    c = cfg.TRAINER.HYPTREE.CURVATURE
    return dict(
        mode=c.MODE,
        c0=c.C0,
        learn=c.LEARN,
        kappa=c.KAPPA,
        c_text_init=c.C_TEXT_INIT or None,  # 0: start at C0
        c_image_init=c.C_IMAGE_INIT or None,
    )


def fusion_options(cfg) -> dict:
    f = cfg.TRAINER.HYPTREE.FUSION
    return dict(learn_value=f.LEARN_VALUE, qk_init=f.QK_INIT)


def build_model(cfg, clip_model, taxonomy: Taxonomy) -> HierarchicalCLIP:
    """``HierarchicalCLIP`` on ``clip_model`` for ``taxonomy`` as the config says."""
    h = cfg.TRAINER.HYPTREE
    return HierarchicalCLIP(
        clip_model,
        taxonomy,
        backbone=h.BACKBONE,
        preset=h.PRESET,
        prompt_options=prompt_options(cfg, h.BACKBONE),
        layers=tuple(h.LAYERS),
        image_tree=h.IMAGE_TREE,
        pass_through=h.PASS_THROUGH,
        settings=objective_settings(cfg),
        curvature=curvature_options(cfg),
        seed=max(int(cfg.SEED), 0),
        fusion=fusion_options(cfg),
        text_chunk="auto" if h.TEXT_CHUNK == -1 else int(h.TEXT_CHUNK),
    )


_DATASET_KEYS = (
    "DATASET.ROOT",
    "DATASET.NUM_SHOTS",
    "DATASET.SUBSAMPLE_CLASSES",
    "DATASET.SUBSAMPLE_SPLIT",
    "DATASET.SUBSAMPLE_SEED",
    "TRAINER.HYPTREE.TAXONOMY.FILE",
    "SEED",
)


def dataset_options(cfg) -> dict:
    """Keyword arguments of ``build_hierarchical_dataset`` (all but ``name``) from a yacs cfg.

    Raises ``KeyError`` naming the missing keys (and saying to call ``add_hyptree_config``).
    """
    require_keys(cfg, _DATASET_KEYS, "building a HypTree dataset")
    return dict(
        root=cfg.DATASET.ROOT,
        num_shots=int(cfg.DATASET.NUM_SHOTS),
        subsample=str(cfg.DATASET.SUBSAMPLE_CLASSES),
        split_mode=str(cfg.DATASET.SUBSAMPLE_SPLIT),
        split_seed=int(cfg.DATASET.SUBSAMPLE_SEED),
        seed=int(cfg.SEED),
        taxonomy_file=str(cfg.TRAINER.HYPTREE.TAXONOMY.FILE),
    )
