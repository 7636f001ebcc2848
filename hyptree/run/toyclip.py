"""A tiny CLIP pretrained on ToyWorld image-caption pairs, and the toy dataset's default weights.

* :func:`pretrain_toy_clip` - CLIP's contrastive (InfoNCE) pretraining of a small
  ``clip.model.CLIP`` (:func:`hyptree.model.loading.tiny_clip`) on images drawn from
  ToyWorld's generator with seeds no dataset split uses (:func:`hyptree.data.toy_world.sample_world`),
  each paired with a caption at a random granularity and template ("a circle", "a photo of
  a red circle", "a small red striped circle", ...). A batch can hold several images a
  caption fits ("a circle" fits every circle), so the InfoNCE targets are spread evenly
  over every fitting pair rather than only the diagonal (CLIP's loss when all fit once).
* :func:`zero_shot_accuracy` - leaf accuracy of "a photo of a {leaf}." prompts on a split.
* :func:`toy_clip_path` - the default weights of toy runs: made on first use, cached under
  ``$DATA/toy_clip/`` (:func:`hyptree.utils.files.build_file_once`: one process builds, a
  concurrent one waits and reads).
* :func:`clip_source` - which weights a run loads (``TRAINER.HYPTREE.CLIP_PATH``, else the
  toy default for ToyWorld, else ``MODEL.BACKBONE.NAME``).
* :func:`main` - ``python -m hyptree toy pretrain-clip OUT.pt``.

Deterministic: seeded data and initialisation, ``torch.use_deterministic_algorithms`` and
one thread (the same bits on the same machine and torch build).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hyptree.data import toy_world
from hyptree.model.loading import load_clip, tiny_clip

__all__ = [
    "PretrainSpec",
    "DEFAULT_SPEC",
    "captions_for",
    "pretrain_toy_clip",
    "zero_shot_accuracy",
    "toy_clip_path",
    "clip_source",
    "main",
]

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
TEMPLATES = ("a {}.", "a photo of a {}.", "an image of a {}.", "a drawing of a {}.", "a picture of a {}.", "{}")
TOY_CLIP_DIR = "toy_clip"
TOY_DATASETS = ("ToyWorld",)  # Dassl names whose runs default to the pretrained tiny CLIP


@dataclass(frozen=True)
class PretrainSpec:
    """Model sizes and schedule of :func:`pretrain_toy_clip` (its name tags the cache file)."""

    embed_dim: int = 64
    vision_width: int = 64
    vision_layers: int = 4
    patch: int = 8
    text_width: int = 64
    text_layers: int = 2
    steps: int = 700
    batch: int = 128
    lr: float = 2e-3
    warmup: float = 0.05  # share of the steps with a linear warm-up (then cosine decay)
    weight_decay: float = 0.05
    clip_grad: float = 0.0  # gradient-norm clip (0: none)
    learn_scale: bool = False  # learn CLIP's logit scale (from 1/0.07, at most 100)
    pool: int = 12000
    full_caption: float = 0.3  # share of captions naming every attribute (the leaf); others uniform
    hard: float = 0.0  # share of each batch drawn from one shape's subtree (siblings in the batch)
    flip: bool = True  # random horizontal flips
    seed: int = 0

    def tag(self) -> str:
        return "_".join(f"{v}" for v in asdict(self).values())


DEFAULT_SPEC = PretrainSpec()


def _words(attrs: dict) -> str:
    return " ".join(attrs[k] for k in ("size", "colour", "pattern", "shape") if k in attrs)


def captions_for(cls: tuple[str, str, str, str]) -> list[tuple[str, frozenset]]:
    """Every caption of a leaf: ``(text, attributes it names)``; the shape is always named."""
    shape, colour, pattern, size = cls
    out = []
    for mask in range(8):
        attrs = {"shape": shape}
        if mask & 1:
            attrs["size"] = size
        if mask & 2:
            attrs["colour"] = colour
        if mask & 4:
            attrs["pattern"] = pattern
        out += [(t.format(_words(attrs)), frozenset(attrs.items())) for t in TEMPLATES]
    return out


def encode_text_short(model, tokens: torch.Tensor, embed=None) -> torch.Tensor:
    """``model.encode_text`` on the first ``L`` token positions only (``L`` = longest caption).

    The text mask is causal, so the end-of-text feature never sees later positions: this
    equals the full 77-position result at a fraction of the cost. ``embed``: the token
    embedding to use (default ``model.token_embedding``; pretraining passes a compact copy
    of the rows its captions use).
    """
    length = int(tokens.argmax(-1).max()) + 1
    tokens = tokens[:, :length]
    x = (embed or model.token_embedding)(tokens) + model.positional_embedding[:length]
    mask = model.build_attention_mask()[:length, :length].to(x.device)
    x = x.permute(1, 0, 2)
    for blk in model.transformer.resblocks:
        h = blk.ln_1(x)
        x = x + blk.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        x = x + blk.mlp(blk.ln_2(x))
    x = model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ model.text_projection


class _CompactEmbedding(torch.nn.Module):
    """The rows of a token embedding that a caption set uses, trained in place of the
    49408-row table (whose dense gradient and optimiser update dominate a tiny model's step).

    Keeps token order (CLIP finds the end-of-text token as the largest id), so it can stand
    in for the full table on tokens remapped by :meth:`compact`; :meth:`write_back` copies
    the trained rows into the model.
    """

    def __init__(self, table: torch.nn.Embedding, tokens: torch.Tensor):
        super().__init__()
        self.ids = torch.unique(tokens)  # sorted: order kept
        self.weight = torch.nn.Parameter(table.weight.detach()[self.ids].clone())

    def compact(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.ids, tokens)

    def forward(self, tokens):
        return F.embedding(tokens, self.weight)

    @torch.no_grad()
    def write_back(self, table: torch.nn.Embedding) -> None:
        table.weight[self.ids] = self.weight


def _to_input(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD


def _caption_table(classes):
    import clip

    texts, attrs, per_class = [], [], []
    index = {}
    for cls in classes:
        ids = []
        for text, a in captions_for(cls):
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
                attrs.append(a)
            ids.append(index[text])
        per_class.append(ids)
    full = [frozenset({"shape": s, "colour": c, "pattern": p, "size": z}.items()) for s, c, p, z in classes]
    fits = torch.tensor([[a <= f for a in attrs] for f in full])  # (classes, captions)
    return clip.tokenize(texts), per_class, fits


def _new_model(spec: PretrainSpec):
    return tiny_clip(
        embed_dim=spec.embed_dim,
        vision_width=spec.vision_width,
        vision_layers=spec.vision_layers,
        vision_patch_size=spec.patch,
        transformer_width=spec.text_width,
        transformer_heads=max(1, spec.text_width // 64),
        transformer_layers=spec.text_layers,
        seed=spec.seed,
    ).train()


class _Batches:
    """Seeded batches of ``(pool indices, caption indices)``.

    A caption is the leaf's full one with probability ``spec.full_caption``, else any of
    its captions. A share ``spec.hard`` of each batch comes from one random shape's subtree,
    so siblings that differ in one fine attribute meet as negatives.
    """

    def __init__(self, spec: PretrainSpec, labels: torch.Tensor, per_class: torch.Tensor, classes):
        self.spec, self.labels, self.per_class = spec, labels, per_class
        self.gen = torch.Generator().manual_seed(spec.seed)
        shapes = sorted({c[0] for c in classes})
        self.by_shape = [
            torch.nonzero(torch.tensor([classes[y][0] == s for y in labels.tolist()]))[:, 0] for s in shapes
        ]

    def __call__(self):
        spec, gen, n = self.spec, self.gen, self.spec.batch
        hard = int(round(spec.hard * n))
        idx = torch.randint(0, len(self.labels), (n - hard,), generator=gen)
        if hard:
            group = self.by_shape[int(torch.randint(0, len(self.by_shape), (1,), generator=gen))]
            idx = torch.cat([group[torch.randint(0, len(group), (hard,), generator=gen)], idx])
        lab = self.labels[idx]
        width = self.per_class.shape[1]
        pick = torch.randint(0, width, (n,), generator=gen)
        full = torch.randint(width - len(TEMPLATES), width, (n,), generator=gen)
        pick = torch.where(torch.rand(n, generator=gen) < spec.full_caption, full, pick)
        flip = (torch.rand(n, generator=gen) < 0.5) & spec.flip
        return idx, lab, self.per_class[lab, pick], flip


def pretrain_toy_clip(spec: PretrainSpec = DEFAULT_SPEC, progress: bool = True, log=None):
    """Pretrain a tiny CLIP on ToyWorld samples; returns ``(model in eval mode, losses per step)``."""
    from tqdm import tqdm

    classes = toy_world.world_classes()
    with torch.random.fork_rng(devices=[]), _deterministic():
        torch.manual_seed(spec.seed)
        model = _new_model(spec)
        images, labels = toy_world.sample_world(spec.pool, seed=1000 + spec.seed, progress=progress)
        pool = _to_input(images)
        labels = torch.from_numpy(labels)
        tokens, per_class, fits = _caption_table(classes)
        embed = _CompactEmbedding(model.token_embedding, tokens)
        tokens = embed.compact(tokens)
        model.token_embedding.requires_grad_(False)
        model.logit_scale.requires_grad_(spec.learn_scale)
        params = [p for p in model.parameters() if p.requires_grad] + [embed.weight]
        opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
        warm = max(1, int(spec.warmup * spec.steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, spec.steps) / spec.steps))
        )
        batches = _Batches(spec, labels, torch.tensor(per_class), classes)
        losses = []
        bar = tqdm(range(spec.steps), desc="tiny CLIP pretraining", disable=not progress)
        for _ in bar:
            idx, lab, cap, flip = batches()
            x = pool[idx]
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            loss = _contrastive_loss(model, x, tokens[cap], fits[lab][:, cap], embed)
            opt.zero_grad()
            loss.backward()
            if spec.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, spec.clip_grad)
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, np.log(100.0))
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if log is not None:
                log(len(losses), model, embed)
        embed.write_back(model.token_embedding)
    return model.eval(), losses


def _contrastive_loss(model, images, tokens, fits, embed=None):
    """Symmetric InfoNCE over a batch; ``fits[i, j]``: caption ``j`` describes image ``i``."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(encode_text_short(model, tokens, embed), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.t()
    target = fits.float()
    i2t = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    t2i = -(target / target.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
    return (i2t + t2i) / 2


class _deterministic:
    def __enter__(self):
        self.state = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.state[0])
        torch.set_num_threads(self.state[1])


@torch.no_grad()
def zero_shot_accuracy(model, items, classnames) -> float:
    """Leaf accuracy (%) of "a photo of a {class}." prompts on ``items`` (``hyptree.data.Item``)."""
    import clip
    from PIL import Image

    text = clip.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in classnames])
    txt = F.normalize(encode_text_short(model, text), dim=-1)
    arr = np.stack([np.asarray(Image.open(i.impath).convert("RGB")) for i in items])
    img = F.normalize(model.encode_image(_to_input(arr)), dim=-1)
    pred = (img @ txt.t()).argmax(1)
    return 100.0 * float((pred == torch.tensor([i.label for i in items])).float().mean())


def toy_clip_path(root: str, spec: PretrainSpec = DEFAULT_SPEC, progress: bool = True) -> str:
    """The pretrained tiny CLIP for toy runs under ``root`` (``$DATA``): made once, then read."""
    path = os.path.join(os.path.abspath(os.path.expanduser(root)), TOY_CLIP_DIR, f"tiny_clip_v1_{spec.tag()}.pt")

    def build(f):
        print(f"Pretraining the toy tiny CLIP (first use) into {path}")
        model, _ = pretrain_toy_clip(spec, progress=progress)
        torch.save(model.state_dict(), f)

    os.makedirs(os.path.dirname(path), exist_ok=True)
    from hyptree.utils.files import build_file_once

    build_file_once(path, build)
    return path


def clip_source(cfg) -> str:
    """The CLIP weights a run loads: ``TRAINER.HYPTREE.CLIP_PATH`` if set; else, for the toy
    dataset (:data:`TOY_DATASETS`), the pretrained tiny CLIP (:func:`toy_clip_path`); else
    ``MODEL.BACKBONE.NAME`` (real datasets need real weights)."""
    path = cfg.TRAINER.HYPTREE.CLIP_PATH
    if path:
        return path
    if cfg.DATASET.NAME in TOY_DATASETS:
        return toy_clip_path(cfg.DATASET.ROOT)
    return cfg.MODEL.BACKBONE.NAME


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1")


def main(argv=None) -> int:
    """``python -m hyptree toy pretrain-clip OUT.pt [--steps N] [--data DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hyptree toy", description="ToyWorld utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("pretrain-clip", help="pretrain a tiny CLIP on ToyWorld captions")
    pre.add_argument("out", help="output file (a torch state dict)")
    pre.add_argument("--data", default="./data", help="data root holding (or receiving) toy_world, for the report")
    for name, value in asdict(DEFAULT_SPEC).items():
        kind = _flag if isinstance(value, bool) else type(value)
        pre.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value, metavar=type(value).__name__.upper())
    args = parser.parse_args(argv)
    spec = PretrainSpec(**{k: getattr(args, k) for k in asdict(DEFAULT_SPEC)})
    start = time.time()
    model, losses = pretrain_toy_clip(spec)
    out = os.path.expanduser(args.out)
    from hyptree.utils.files import atomic_open

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_open(out, "wb") as f:
        torch.save(model.state_dict(), f)
    data = toy_world.make_world_dataset(os.path.expanduser(args.data))
    acc = zero_shot_accuracy(load_clip(out), data.test, data.classnames)
    print(
        f"wrote {out} in {time.time() - start:.0f} s: loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
        f"zero-shot leaf accuracy on the ToyWorld test set {acc:.2f} % "
        f"({len(data.classnames)} classes, chance {100 / len(data.classnames):.2f} %)"
    )
    return 0
