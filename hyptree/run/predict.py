"""Apply a trained run to images: a root-to-leaf path per image (``python -m hyptree predict``).

    python -m hyptree predict --model-dir RUN_DIR [--load-epoch E] IMAGES_OR_FOLDERS ... \\
        [--format json|csv|table] [--topk K] [--batch-size B] [--device auto|cpu|cuda] [--output FILE]

Everything comes from the run folder, so nothing is passed twice:

* ``config.yaml``: the run's full yacs config (written by the trainers when training starts):
  backbone, preset, CLIP weights (``TRAINER.HYPTREE.CLIP_PATH`` or ``MODEL.BACKBONE.NAME``),
  precision, input size, interpolation and normalisation;
* ``taxonomy.txt``: the tree the run evaluated (leaf ``k`` = class ``k``);
* ``learnable/model-best.pth.tar`` (or ``model.pth.tar-E`` with ``--load-epoch``; without it
  and without a best checkpoint, the latest epoch, named on stderr): the learned weights.

Images are read as RGB and preprocessed as Dassl's test transform (CLIP's): resize the
shorter side to ``max(INPUT.SIZE)`` with ``INPUT.INTERPOLATION``, center-crop
``INPUT.SIZE``, to ``[0, 1]``, normalise with ``INPUT.PIXEL_MEAN/STD`` (when
``INPUT.TRANSFORMS`` has ``normalize``, as Dassl does). Scores come from the same calls as
:func:`hyptree.eval.evaluate` (text features once, one vision pass per batch); the decisions
are :func:`hyptree.eval.decode.decode`. Python::

    from hyptree.run.predict import HierarchicalPredictor
    p = HierarchicalPredictor.from_run("output/run", device="auto")
    records = p.predict(["cat.jpg", "photos/"], topk=5)  # one dict per image
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import re
import sys
from collections.abc import Sequence

import torch
from tqdm import tqdm

from hyptree.eval.decode import decision_records, decode
from hyptree.eval.runfiles import jsonable
from hyptree.run.dotted import cfg_get
from hyptree.tree.io import read_paths_file
from hyptree.utils.files import atomic_write_text

__all__ = ["CONFIG_FILE", "HierarchicalPredictor", "load_run_config", "checkpoint_path", "image_files", "main"]

CONFIG_FILE = "config.yaml"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_run_config(run_dir: str):
    """The yacs config a run saved (``RUN_DIR/config.yaml``)."""
    from yacs.config import CfgNode

    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: runs record their config when training starts (trainers/hyptree_base.py); "
            f"for an older run, write its config there (the '** Config **' block of its log.txt)"
        )
    with open(path, encoding="utf-8") as f:
        try:
            return CfgNode.load_cfg(f)
        except Exception as e:
            raise ValueError(f"{path}: not a yacs config ({e})") from None


def checkpoint_path(run_dir: str, epoch: int | None = None) -> str:
    """``learnable/model.pth.tar-EPOCH``; without ``epoch`` ``model-best.pth.tar`` if there is one,
    else the highest epoch. Raises naming the folder when there is none."""
    folder = os.path.join(run_dir, "learnable")
    if epoch is not None:
        path = os.path.join(folder, f"model.pth.tar-{int(epoch)}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint {path} (epochs there: {_epochs(folder) or 'none'})")
        return path
    best = os.path.join(folder, "model-best.pth.tar")
    if os.path.isfile(best):
        return best
    epochs = _epochs(folder)
    if not epochs:
        raise FileNotFoundError(f"no checkpoint in {folder} (model-best.pth.tar or model.pth.tar-N)")
    return os.path.join(folder, f"model.pth.tar-{epochs[-1]}")


def _epochs(folder: str) -> list[int]:
    names = glob.glob(os.path.join(glob.escape(folder), "model.pth.tar-*"))
    return sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"model\.pth\.tar-(\d+)", os.path.basename(n))))


def image_files(inputs: Sequence[str]) -> list[str]:
    """Files as given, folders searched recursively for images (sorted). Raises on a missing path
    or a folder without images."""
    out = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(d, f) for d, _, fs in os.walk(item) for f in fs if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {item}")
            out += found
        elif os.path.isfile(item):
            out.append(item)
        else:
            raise FileNotFoundError(f"no such image or folder: {item}")
    return out


def _transform(cfg):
    """Dassl's test transform from the run's ``INPUT`` section (see the module docstring)."""
    from torchvision import transforms as T

    modes = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
    modes["nearest"] = T.InterpolationMode.NEAREST
    interp = str(cfg_get(cfg, "INPUT.INTERPOLATION", "bicubic"))
    if interp not in modes:
        raise ValueError(f"INPUT.INTERPOLATION {interp!r}: expected one of {', '.join(modes)}")
    size = tuple(int(s) for s in cfg_get(cfg, "INPUT.SIZE", (224, 224)))
    steps = [T.Resize(max(size), interpolation=modes[interp]), T.CenterCrop(size), T.ToTensor()]
    if "normalize" in list(cfg_get(cfg, "INPUT.TRANSFORMS", ["normalize"])):
        steps.append(T.Normalize(mean=list(cfg.INPUT.PIXEL_MEAN), std=list(cfg.INPUT.PIXEL_STD)))
    return T.Compose(steps)


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: CUDA is not available")
    return torch.device(device)


class HierarchicalPredictor:
    """A trained model, its taxonomy and its preprocessing; :meth:`from_run` reads a run folder.

    Args:
        model: a :class:`~hyptree.model.hierarchical.HierarchicalCLIP` (put in eval mode).
        taxonomy: the tree to decode (the model scores it).
        transform: PIL image -> ``(3, H, W)`` tensor.
        device: where the images go (the model's device).
    """

    def __init__(self, model, taxonomy, transform, device, checkpoint: str = ""):
        self.model = model.eval()
        if model.taxonomy != taxonomy:
            model.set_taxonomy(taxonomy)
        self.taxonomy = taxonomy
        self.transform = transform
        self.device = torch.device(device)
        self.checkpoint = checkpoint
        with torch.no_grad():
            self._text = model.precompute_text()
            self._prompts = model.prompt_learner()

    @classmethod
    def from_run(cls, run_dir: str, load_epoch: int | None = None, device: str = "auto", clip_path: str | None = None):
        """Model, taxonomy and preprocessing of the run in ``run_dir`` (see the module docstring);
        ``clip_path`` overrides the CLIP weights the config names (e.g. a run moved machines)."""
        from hyptree.model.loading import load_clip
        from hyptree.run.factory import build_model
        from hyptree.run.training import learnable_checkpoint, resolve_precision

        cfg = load_run_config(run_dir)
        tax_file = os.path.join(run_dir, "taxonomy.txt")
        if not os.path.isfile(tax_file):
            raise FileNotFoundError(f"{tax_file} not found: it is written with results.json when the run is evaluated")
        taxonomy = read_paths_file(tax_file)
        ckpt_file = checkpoint_path(run_dir, load_epoch)
        dev = _device(device)
        h = cfg.TRAINER.HYPTREE
        precision = resolve_precision(cfg_get(cfg, f"TRAINER.{str(h.BACKBONE).upper()}.PREC", "fp32"), dev)
        clip_model = load_clip(clip_path or h.CLIP_PATH or cfg.MODEL.BACKBONE.NAME, device=dev, precision=precision)
        model = build_model(cfg, clip_model, taxonomy).to(dev)
        state = torch.load(ckpt_file, map_location=dev, weights_only=False)  # Dassl's pickled checkpoint
        learnable_checkpoint(model).load_state_dict(state["state_dict"])
        return cls(model, taxonomy, _transform(cfg), dev, checkpoint=ckpt_file)

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_nodes)`` node scores of preprocessed ``images (B, 3, H, W)`` (as evaluate)."""
        m = self.model
        final, tokens = m.image_features(images.to(self.device), self._prompts)
        return m.scores(self._text, m.node_image_features(self._text, final, tokens)).float()

    def load_image(self, path: str) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as im:
                return self.transform(im.convert("RGB"))
        except OSError as e:
            raise ValueError(f"{path}: cannot read the image ({e})") from None

    def predict(self, inputs: Sequence[str], topk: int = 5, batch_size: int = 32, progress: bool = True) -> list[dict]:
        """One record per image (files, and folders searched for images): ``{"image", "flat",
        "top_down", "topk", "agree"}`` as :func:`~hyptree.eval.decode.decision_records`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        files = image_files(inputs)
        out = []
        for a in tqdm(range(0, len(files), batch_size), desc="predict", disable=not progress, file=sys.stderr):
            batch = files[a : a + batch_size]
            images = torch.stack([self.load_image(f) for f in batch])
            dec = decode(self.taxonomy, self.scores(images), k=topk)
            out += [{"image": f, **r} for f, r in zip(batch, decision_records(self.taxonomy, dec))]
        return out


def _path_text(part: dict) -> tuple[str, str]:
    return "/".join(p["node"] for p in part["path"]), ";".join(f"{p['score']:.4f}" for p in part["path"])


def format_records(records: list[dict], fmt: str) -> str:
    """``json`` (a list), ``csv`` (one row per image) or ``table`` (text) of :meth:`predict`'s records."""
    if fmt == "json":
        return json.dumps(jsonable(records), indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        fields = ["image", "flat_leaf", "flat_path", "flat_scores", "top_down_leaf", "top_down_path"]
        w = csv.DictWriter(buf, fieldnames=[*fields, "top_down_scores", "agree", "topk"], lineterminator="\n")
        w.writeheader()
        for r in records:
            (fp, fs), (tp, ts) = _path_text(r["flat"]), _path_text(r["top_down"])
            topk = ";".join(f"{t['leaf']}:{t['prob']:.4f}" for t in r["topk"])
            w.writerow(
                dict(zip(fields, (r["image"], r["flat"]["leaf"], fp, fs, r["top_down"]["leaf"], tp)))
                | {"top_down_scores": ts, "agree": int(r["agree"]), "topk": topk}
            )
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"format must be json, csv or table, got {fmt!r}")
    lines = []
    for r in records:
        lines.append(r["image"])
        for key in ("flat", "top_down"):
            path = " > ".join(f"{p['node']} ({p['score']:.2f})" for p in r[key]["path"])
            lines.append(f"  {key:<9} {path}")
        lines.append("  top-k     " + ", ".join(f"{t['leaf']} {t['prob']:.3f}" for t in r["topk"]))
    return "\n".join(lines) + ("\n" if lines else "")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hyptree predict", description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--model-dir", required=True, help="the run folder (config.yaml, taxonomy.txt, learnable/)")
    p.add_argument("--load-epoch", type=int, help="checkpoint epoch (default: best, else the latest)")
    p.add_argument("--format", choices=("json", "csv", "table"), default="table")
    p.add_argument("--topk", type=int, default=5, help="leaves listed per image (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: %(default)s)")
    p.add_argument("--clip-path", help="CLIP weights instead of the ones the run's config names")
    p.add_argument("--output", help="write here instead of printing")
    args = p.parse_args(argv)
    try:
        predictor = HierarchicalPredictor.from_run(args.model_dir, args.load_epoch, args.device, args.clip_path)
        print(f"checkpoint {predictor.checkpoint} on {predictor.device}", file=sys.stderr)
        text = format_records(predictor.predict(args.inputs, args.topk, args.batch_size), args.format)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.output:
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
