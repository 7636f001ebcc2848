"""MaPLeHypTree: MaPLe's coupled vision-language prompts with HypTree's trees (or the
vanilla / ProTeCt presets). Settings: ``TRAINER.MAPLE`` (N_CTX, CTX_INIT, PROMPT_DEPTH,
PREC) and ``TRAINER.HYPTREE``."""

from dassl.engine import TRAINER_REGISTRY

from .hyptree_base import HierTrainer


@TRAINER_REGISTRY.register()
class MaPLeHypTree(HierTrainer):
    BACKBONE = "maple"
    PREC_KEY = "MAPLE"
