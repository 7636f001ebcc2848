"""HypTree entry point, CoOp/MaPLe style (same flags as MaPLe's train.py).

    python train.py --root DATA --seed 1 --trainer MaPLeHypTree \
        --dataset-config-file configs/datasets/cifar100.yaml \
        --config-file configs/trainers/MaPLeHypTree/hyptree.yaml \
        --output-dir output/... DATASET.NUM_SHOTS 16

    python train.py ... --eval-only --model-dir output/... --load-epoch 5 \
        DATASET.SUBSAMPLE_CLASSES new

Config: Dassl defaults -> HypTree keys (and the CoOp / CoCoOp / MaPLe / IVLP / VPT /
PromptSRC sections, so those repositories' yaml files load) -> dataset yaml -> method yaml
-> command-line flags -> trailing ``KEY VALUE`` options.
"""

import argparse
import os
import sys

try:
    import dassl  # noqa: F401
except ModuleNotFoundError:
    sys.exit("train.py needs Dassl, which is not installed: run  bash scripts/setup.sh  (README.md, Set up)")

from hyptree.run.dassl_compat import apply_dassl_compat

apply_dassl_compat()  # before the trainers bind dassl.utils.load_checkpoint

import torch  # noqa: E402
from dassl.config import get_cfg_default  # noqa: E402
from dassl.engine import TRAINER_REGISTRY, build_trainer  # noqa: E402
from dassl.utils import collect_env_info, set_random_seed, setup_logger  # noqa: E402
from yacs.config import CfgNode as CN  # noqa: E402

import datasets  # noqa: F401,E402  registers the hierarchical datasets
import trainers  # noqa: F401,E402  registers MaPLeHypTree, PromptSRCHypTree, CoOpHier
from hyptree.run.config import add_hyptree_config  # noqa: E402
from hyptree.run.logs import route_logging  # noqa: E402


def print_args(args, cfg, verbose=False):
    print("** Arguments **")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    if verbose:
        print("** Config **")
        print(cfg)
        print("** System info **\n" + collect_env_info() + "\n")
    else:
        print("(the full config and system info: pass --verbose or set HYPTREE_VERBOSE=1)")


def check_trainer_name(name):
    available = sorted(TRAINER_REGISTRY.registered_names())
    if name not in available:
        raise SystemExit(f"unknown trainer {name!r} (--trainer / TRAINER.NAME); available: {', '.join(available)}")


def reset_cfg(cfg, args):
    """Command-line flags that map onto config keys."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None and args.seed >= 0:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def _section(**values):
    node = CN()
    for key, value in values.items():
        node[key] = value
    return node


def extend_cfg(cfg):
    """HypTree's keys plus the other prompt learners' sections (published defaults), so
    configs written for CoOp, CoCoOp, MaPLe, IVLP, VPT or PromptSRC merge without errors."""
    add_hyptree_config(cfg)  # TRAINER.HYPTREE, .COOP, .MAPLE, .PROMPTSRC, DATASET.SUBSAMPLE_*
    extra = {
        "COCOOP": _section(N_CTX=16, CTX_INIT="", PREC="fp16"),
        "IVLP": _section(
            N_CTX_VISION=2,
            N_CTX_TEXT=2,
            CTX_INIT="a photo of a",
            PREC="fp16",
            PROMPT_DEPTH_VISION=9,
            PROMPT_DEPTH_TEXT=9,
        ),
        "VPT": _section(N_CTX_VISION=2, CTX_INIT="a photo of a", PREC="fp16", PROMPT_DEPTH_VISION=1),
    }
    for name, node in extra.items():
        if name not in cfg.TRAINER:
            cfg.TRAINER[name] = node
    return cfg


def setup_cfg(args):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def build_parser():
    p = argparse.ArgumentParser(description="HypTree training / evaluation (Dassl)")
    p.add_argument("--root", type=str, default="", help="path to the datasets")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, default="", help="checkpoint directory to resume from")
    p.add_argument("--seed", type=int, default=-1, help="only a value >= 0 fixes the seed")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains (DA/DG)")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains (DA/DG)")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="method config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    p.add_argument("--trainer", type=str, default="", help="trainer name")
    p.add_argument("--backbone", type=str, default="", help="CLIP model name (MODEL.BACKBONE.NAME)")
    p.add_argument("--head", type=str, default="", help="head name (unused by HypTree)")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="checkpoint directory for --eval-only")
    p.add_argument("--load-epoch", type=int, help="checkpoint epoch for --eval-only (default: best)")
    p.add_argument("--no-train", action="store_true", help="build everything, do not train")
    p.add_argument("--verbose", action="store_true", help="print the full config and system info")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    return p


def main(args):
    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    route_logging()  # importing Dassl muted logging process-wide; hyptree's messages go to log.txt too
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print_args(args, cfg, verbose=getattr(args, "verbose", False) or os.environ.get("HYPTREE_VERBOSE") == "1")
    check_trainer_name(cfg.TRAINER.NAME)
    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return trainer
    if not args.no_train:
        trainer.train()
    return trainer


if __name__ == "__main__":
    main(build_parser().parse_args())
