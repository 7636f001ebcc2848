import pytest
from yacs.config import CfgNode as CN

from hyptree.run.config import add_hyptree_config, check_config, default_config


def test_default_config_is_complete_and_valid():
    cfg = default_config()
    check_config(cfg)
    h = cfg.TRAINER.HYPTREE
    assert (h.BACKBONE, h.PRESET, h.CURVATURE.MODE, h.ALIGN.CROSS) == ("maple", "hyptree", "intermediate", "entailment")
    assert (h.W_CUT, h.LAMBDA, h.ALPHA, h.CURVATURE.KAPPA) == (1.0, 0.5, 0.5, 3.0)
    assert list(h.LAYERS) == [4, 7, 11]
    # published backbone defaults
    assert cfg.TRAINER.MAPLE.N_CTX == 2 and cfg.TRAINER.MAPLE.PROMPT_DEPTH == 9
    assert cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT == 25 and cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT == 10


def test_add_only_missing_keys_composes_with_maple_extend_cfg():
    # what MaPLe's train.py extend_cfg leaves behind, with a user override
    cfg = CN()
    cfg.TRAINER = CN()
    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 4
    cfg.TRAINER.MAPLE.PREC = "amp"
    cfg.DATASET = CN()
    cfg.DATASET.SUBSAMPLE_CLASSES = "base"
    add_hyptree_config(cfg)
    assert cfg.TRAINER.MAPLE.N_CTX == 4 and cfg.TRAINER.MAPLE.PREC == "amp"
    assert cfg.TRAINER.MAPLE.PROMPT_DEPTH == 9  # filled in
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "base"
    cfg.TRAINER.HYPTREE.ALPHA = 0.1
    add_hyptree_config(cfg)  # idempotent, keeps user values
    assert cfg.TRAINER.HYPTREE.ALPHA == 0.1
    # a yaml override still merges (keys exist)
    cfg.merge_from_list(["TRAINER.HYPTREE.CURVATURE.MODE", "shared"])
    assert cfg.TRAINER.HYPTREE.CURVATURE.MODE == "shared"


def test_frozen_and_clashing_configs_are_refused():
    cfg = default_config()
    cfg.freeze()
    with pytest.raises(RuntimeError, match="unfrozen"):
        add_hyptree_config(cfg)
    bad = CN()
    bad.TRAINER = CN()
    bad.TRAINER.HYPTREE = 3
    with pytest.raises(TypeError, match="HYPTREE"):
        add_hyptree_config(bad)


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("TRAINER.HYPTREE.PRESET", "protekt", "TRAINER.HYPTREE.PRESET"),
        ("TRAINER.HYPTREE.CURVATURE.MODE", "hyperbolic", "CURVATURE.MODE"),
        ("TRAINER.HYPTREE.LAYERS", [7, 4], "LAYERS"),
        ("TRAINER.HYPTREE.LAYERS", [4, 7], "LAYERS"),
        ("TRAINER.HYPTREE.NODE_LOSS", "per_leaf", "NODE_LOSS"),
        ("TRAINER.HYPTREE.SCHEDULE", "per_step", "SCHEDULE"),
        ("TRAINER.HYPTREE.FUSION.QK_INIT", "random", "QK_INIT"),
        ("TRAINER.HYPTREE.CURVATURE.C_TEXT_INIT", 0.001, "C_TEXT_INIT"),
        ("TRAINER.HYPTREE.EVAL.DEPTH_ACCURACY", "both", "DEPTH_ACCURACY"),
        ("TRAINER.HYPTREE.CURVATURE.C0", -1.0, "C0"),
    ],
)
def test_check_config_names_the_bad_key(key, value, needle):
    cfg = default_config()
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=needle):
        check_config(cfg)
