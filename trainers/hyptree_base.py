"""Dassl glue shared by the HypTree trainers (MaPLeHypTree, PromptSRCHypTree, CoOpHier).

Everything substantive lives in ``hyptree``; this file maps Dassl's hooks onto it:

* data: Dassl's ``DataManager``; the tree is ``self.dm.dataset.taxonomy`` (the base, novel
  or target-domain sub-tree, leaf ``k`` = label ``k``);
* model: ``hyptree.model.hierarchical.HierarchicalCLIP`` on ``hyptree.model.loading.load_clip`` weights;
* checkpoints: one registered module, ``learnable`` (``hyptree.run.training.learnable_checkpoint``):
  the prompt learner (with MaPLe's coupling layers), the fusion q/k and the curvatures, plus
  the random-number and GPA state as extra state. Never the frozen CLIP;
* optimiser: Dassl's ``build_optimizer``; schedule: ``hyptree.run.training.build_lr_scheduler``
  (Dassl's schedules, loadable state; see its docstring);
* evaluation: ``hyptree.eval.evaluate`` (LA/HCA/MTA), written into OUTPUT_DIR by
  ``hyptree.run.records.write_evaluation`` (results.json & co.).
"""

import os
import os.path as osp
import re

import torch
from dassl.engine import TrainerX
from dassl.optim import build_optimizer
from dassl.utils import load_checkpoint

from hyptree.eval import TRAIN_LOG_FILE, TrainLog, evaluate, format_metrics
from hyptree.model.loading import load_clip
from hyptree.run.checkpoints import checkpoint_state, resumable_checkpoints, save_checkpoint
from hyptree.run.config import configure_for_trainer
from hyptree.run.factory import build_model
from hyptree.run.logs import route_logging
from hyptree.run.predict import CONFIG_FILE
from hyptree.run.records import data_record, evaluation_cuts_for, write_evaluation
from hyptree.run.toyclip import clip_source
from hyptree.run.training import (
    autocast,
    build_lr_scheduler,
    grad_scaler,
    learnable_checkpoint,
    loss_summary,
    resolve_precision,
)
from hyptree.utils.files import atomic_write_text

CHECKPOINT_NAME = "learnable"  # checkpoints: OUTPUT_DIR/learnable/model.pth.tar-N


def check_input_size(cfg, clip_model, weights):
    """INPUT.SIZE must be the CLIP image resolution (the position embeddings are fixed)."""
    resolution = getattr(clip_model.visual, "input_resolution", None)
    size = tuple(cfg.INPUT.SIZE)
    if resolution and size != (resolution, resolution):
        raise ValueError(
            f"INPUT.SIZE {size} does not match the CLIP image resolution {resolution} of {weights}; "
            f"set INPUT.SIZE ({resolution}, {resolution})"
        )


def missing_checkpoint_message(directory, name, epoch):
    """What is there instead: the epochs with a checkpoint, and whether model-best exists."""
    folder = osp.join(directory, name)
    files = os.listdir(folder) if osp.isdir(folder) else []
    epochs = sorted(int(f.rsplit("-", 1)[1]) for f in files if re.fullmatch(r"model\.pth\.tar-\d+", f))
    wanted = (
        "model-best.pth.tar (no --load-epoch)" if epoch is None else f"model.pth.tar-{epoch} (--load-epoch {epoch})"
    )
    if not osp.isdir(folder):
        found = f"{folder} does not exist: is --model-dir the OUTPUT_DIR of a training run of this trainer?"
    else:
        best = "model-best.pth.tar" in files
        listing = ", ".join(map(str, epochs)) or "none"
        found = f"epochs with a checkpoint: {listing}; model-best.pth.tar: {'yes' if best else 'no'}"
    hint = "" if epoch is not None else "; model-best.pth.tar is written only with TEST.FINAL_MODEL best_val"
    return f"No checkpoint {wanted} in {folder}; {found}{hint}"


class HierTrainer(TrainerX):
    """Base class; subclasses set ``BACKBONE`` and ``PREC_KEY`` (the section with PREC)."""

    BACKBONE = None
    PREC_KEY = None

    # ------------------------------------------------------------------ setup
    def check_cfg(self, cfg):
        route_logging()  # Dassl's import muted logging; the dataset's warnings must show
        configure_for_trainer(cfg, self.BACKBONE, type(self).__name__)

    def build_model(self):
        cfg, h = self.cfg, self.cfg.TRAINER.HYPTREE
        dataset = self.dm.dataset
        self.taxonomy = getattr(dataset, "taxonomy", None)
        if self.taxonomy is None:
            raise TypeError(
                f"dataset {cfg.DATASET.NAME} has no taxonomy; HypTree trainers need a "
                f"hierarchical dataset (e.g. CIFAR100Hier, ImageNetHier, ToyHier)"
            )
        if self.num_classes > self.taxonomy.num_classes:
            raise ValueError(
                f"dataset {cfg.DATASET.NAME} has {self.num_classes} classes but its "
                f"taxonomy {self.taxonomy.num_classes} leaves"
            )
        self.tree = str(getattr(dataset, "tree", cfg.DATASET.SUBSAMPLE_CLASSES))
        self.taxonomy_source = str(getattr(dataset, "taxonomy_source", ""))
        self.precision = resolve_precision(cfg.TRAINER[self.PREC_KEY].PREC, self.device)
        if h.CLIP_PATH and not osp.isfile(osp.expanduser(h.CLIP_PATH)):
            raise FileNotFoundError(f"TRAINER.HYPTREE.CLIP_PATH {h.CLIP_PATH}: no such file")
        weights = clip_source(cfg)  # CLIP_PATH, the toy default, or MODEL.BACKBONE.NAME
        print(f"Loading CLIP {weights} ({self.precision}, {self.device})")
        clip_model = load_clip(weights, device=self.device, precision=self.precision)
        check_input_size(cfg, clip_model, weights)
        print(
            f"Building HierarchicalCLIP ({self.BACKBONE}, preset {h.PRESET}) on {self.tree} tree: "
            f"{self.taxonomy.num_classes} classes, {self.taxonomy.num_nodes} nodes"
        )
        self.model = build_model(cfg, clip_model, self.taxonomy).to(self.device)

        self.learnable = learnable_checkpoint(self.model)
        params = [p for p in self.learnable.parameters() if p.requires_grad]
        print(
            f"Learnable: {sum(p.numel() for p in params):,} parameters in "
            f"{', '.join(name for name, _ in self.learnable.named_children())}"
        )
        self.optim = build_optimizer(self.learnable, cfg.OPTIM, param_groups=[{"params": params}])
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM, h.SCHEDULE)
        self.lr_per_iteration = h.SCHEDULE == "official_per_iteration"
        self.register_model(CHECKPOINT_NAME, self.learnable, self.optim, self.sched)
        self.scaler = grad_scaler(self.precision, self.device)
        self.cuts = evaluation_cuts_for(
            cfg,
            self.taxonomy,
            getattr(dataset, "full_taxonomy", None),
            reference_cuts=getattr(getattr(dataset, "hier", None), "cuts_file", ""),
        )
        self.evaluated_epoch = None  # epochs of training behind the current weights
        self.model_dir = None  # --model-dir of an evaluation-only run; None if trained here
        self.train_log = None
        self.build_extras()

    def build_extras(self):
        """Hook for subclasses (PromptSRC's GPA)."""

    # ------------------------------------------------------------------ training
    def before_train(self):
        super().before_train()  # resumes from OUTPUT_DIR or RESUME; tensorboard
        atomic_write_text(osp.join(self.output_dir, CONFIG_FILE), self.cfg.dump())  # read by hyptree predict
        self.train_log = TrainLog(osp.join(self.output_dir, TRAIN_LOG_FILE))
        self.train_log.truncate(self.start_epoch)  # drop an interrupted epoch's lines
        if self.start_epoch > 0:
            restored = self.learnable.restore_state()
            print(f"Resumed after epoch {self.start_epoch}; restored {', '.join(restored) or 'no'} state")
            self.evaluated_epoch = self.start_epoch

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def forward_backward(self, batch):
        images, labels = self.parse_batch_train(batch)
        with autocast(self.precision, self.device):
            out = self.model.loss(images, labels)
        loss = out["total"]
        if self.scaler is None:
            self.model_backward_and_update(loss)
        else:
            self.detect_anomaly(loss)
            self.model_zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        if self.model.objective.curvatures is not None:
            self.model.objective.curvatures.clamp_()
        summary = loss_summary(out)
        self.train_log.append(
            epoch=self.epoch + 1,
            iteration=self.epoch * self.num_batches + self.batch_idx,
            batch=self.batch_idx,
            lr=self.get_current_lr(),
            **summary,
        )
        if self.lr_per_iteration or (self.batch_idx + 1) == self.num_batches:
            self.update_lr()  # official_per_iteration: after every step; else once per epoch
        return summary

    def after_epoch(self):
        self.evaluated_epoch = self.epoch + 1
        self.end_of_epoch()
        super().after_epoch()  # val test (best_val), checkpoints

    def end_of_epoch(self):
        """Hook for subclasses, before the epoch's checkpoint is written."""

    def after_train(self):
        super().after_train()  # loads the best model (best_val), tests, closes the writer
        if self.train_log is not None:
            self.train_log.close()

    # ------------------------------------------------------------------ checkpoints
    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        """Dassl's checkpoint files, written atomically, with the run's options."""
        for name in self.get_model_names():
            model, optim, sched = self._models[name], self._optims[name], self._scheds[name]
            state = checkpoint_state(model, optim, sched, epoch, val_result, self.cfg)
            save_checkpoint(state, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def resume_model_if_exist(self, directory):
        """Resume from the newest intact checkpoint; refuse changed options."""
        folders = {name: osp.join(directory, name) for name in self.get_model_names()}
        found = resumable_checkpoints(folders, self.cfg)
        if found is None:
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name, (path, ckpt) in found.items():
            print(f'Loading checkpoint from "{path}"')
            self._models[name].load_state_dict(ckpt["state_dict"])
            if self._optims[name] is not None and ckpt.get("optimizer") is not None:
                self._optims[name].load_state_dict(ckpt["optimizer"])
            if self._scheds[name] is not None and ckpt.get("scheduler") is not None:
                self._scheds[name].load_state_dict(ckpt["scheduler"])
            start_epoch = int(ckpt["epoch"])
            print(f"Previous epoch: {start_epoch}")
        return start_epoch

    def load_model(self, directory, epoch=None):
        """Dassl's file layout (``model-best.pth.tar`` or ``model.pth.tar-EPOCH``), strict
        loading of the learnable weights; works for another tree than the one trained on."""
        if not directory:
            print("No --model-dir given: evaluating the initial (untrained) prompts")
            return
        if not osp.isdir(directory):
            raise FileNotFoundError(f"--model-dir {directory}: no such folder")
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            path = osp.join(directory, name, model_file)
            if not osp.exists(path):
                raise FileNotFoundError(missing_checkpoint_message(directory, name, epoch))
            checkpoint = load_checkpoint(path)
            self._models[name].load_state_dict(checkpoint["state_dict"])
            val = checkpoint.get("val_result")
            print(
                f"Loaded {path} (epoch {checkpoint['epoch']}" + (f", val LA {val:.2f}" if val is not None else "") + ")"
            )
            self.evaluated_epoch = int(checkpoint["epoch"])
        # results.json's model_dir marks evaluation-only runs; the best-val reload at the
        # end of training reads this run's own folder
        same = osp.abspath(directory) == osp.abspath(self.output_dir)
        self.model_dir = None if same else directory

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def test(self, split=None):
        """LA/HCA/MTA on the dataset's tree; writes the run outputs; returns LA."""
        self.set_model_mode("eval")
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            loader = self.val_loader
        else:
            split, loader = "test", self.test_loader
        print(
            f"Evaluate on the *{split}* set, {self.tree} tree "
            f"({self.taxonomy.num_classes} classes, {len(self.cuts)} cuts for MTA)"
        )
        # no autocast here: under amp the weights are fp32 and evaluation stays in fp32 (as MaPLe)
        metrics, embeddings = evaluate(
            self.model,
            loader,
            self.taxonomy,
            self.cuts,
            device=self.device,
            depth=self.cfg.TRAINER.HYPTREE.EVAL.DEPTH_ACCURACY,
        )
        print(format_metrics(metrics))
        step = self.evaluated_epoch or 0
        for key in ("LA", "HCA", "MTA", "node_acc"):
            self.write_scalar(f"{split}/{key}", metrics[key], step)
        for d, value in enumerate(metrics["depth_acc"], start=1):
            self.write_scalar(f"{split}/depth{d}", value, step)
        paths = write_evaluation(
            self.cfg,
            self.output_dir,
            metrics,
            embeddings,
            split=split,
            tree=self.tree,
            taxonomy=self.taxonomy,
            cuts=self.cuts,
            taxonomy_source=self.taxonomy_source,
            epoch=self.evaluated_epoch,
            model_dir=self.model_dir,
            data=data_record(getattr(self.dm.dataset, "hier", None)),
        )
        print(f"Wrote {paths['results']}")
        return metrics["LA"]
