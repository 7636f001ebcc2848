"""PromptSRCHypTree: PromptSRC's independent vision-language prompts, its self-regulating
losses (always on, whatever the precision) and Gaussian prompt aggregation (GPA), with
HypTree's trees. Settings: ``TRAINER.PROMPTSRC`` (N_CTX_TEXT/VISION, PROMPT_DEPTH_TEXT/VISION,
TEXT/IMAGE_LOSS_WEIGHT, GPA_MEAN, GPA_STD, PREC) and ``TRAINER.HYPTREE``.

GPA: after every epoch the learned weights (prompts, and fusion q/k and curvatures when
present) are added to a Gaussian-weighted running average over OPTIM.MAX_EPOCH epochs. After
the last epoch the average replaces the weights *before* that epoch's checkpoint is written,
so the final test, the last checkpoint and ``--eval-only --load-epoch MAX_EPOCH`` all see the
aggregated model. The aggregator travels in every checkpoint, so a resumed run aggregates
exactly the same epochs.
"""

import warnings

from dassl.engine import TRAINER_REGISTRY

from hyptree.model.promptsrc import GaussianPromptAggregator

from .hyptree_base import HierTrainer


@TRAINER_REGISTRY.register()
class PromptSRCHypTree(HierTrainer):
    BACKBONE = "promptsrc"
    PREC_KEY = "PROMPTSRC"

    def build_extras(self):
        c = self.cfg.TRAINER.PROMPTSRC
        self.gpa = GaussianPromptAggregator(self.cfg.OPTIM.MAX_EPOCH, mean=c.GPA_MEAN, std=c.GPA_STD)
        self.learnable.add_state("gpa", self.gpa)
        if self.cfg.TEST.FINAL_MODEL == "best_val":
            warnings.warn(
                "PromptSRCHypTree with TEST.FINAL_MODEL best_val: the final test uses the "
                "best validation checkpoint, which is the GPA model only if the best "
                "epoch is the last one",
                stacklevel=2,
            )

    def end_of_epoch(self):
        self.gpa.update(self.epoch, self.learnable.weights())
        if self.epoch + 1 == self.max_epoch:
            print(
                f"GPA: loading the Gaussian-weighted average of epochs 1-{self.max_epoch} "
                f"(mean {self.gpa.mean:g}, std {self.gpa.std:g})"
            )
            self.learnable.load_weights(self.gpa.aggregated_state())
