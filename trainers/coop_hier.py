"""CoOpHier: CoOp's learned text context on the taxonomy's node names - the "CoOp" and
"CoOp + ProTeCt" baselines (presets vanilla / protect; hyptree works too). Settings:
``TRAINER.COOP`` (N_CTX, CTX_INIT, PREC) and ``TRAINER.HYPTREE``."""

from dassl.engine import TRAINER_REGISTRY

from .hyptree_base import HierTrainer


@TRAINER_REGISTRY.register()
class CoOpHier(HierTrainer):
    BACKBONE = "coop"
    PREC_KEY = "COOP"
