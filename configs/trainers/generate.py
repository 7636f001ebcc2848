"""Writes every yaml file under configs/trainers/<Trainer>/ (run from anywhere:
``python configs/trainers/generate.py``; ``--check`` only compares).

The files are complete (no ``_BASE_``: yacs has no inheritance, and the files must also load
through MaPLe's / PromptSRC's own train.py), so they are generated from the tables below
to keep the shared parts identical. Edit here, regenerate, commit both.

Per trainer:

* ``vanilla.yaml`` / ``protect.yaml`` / ``hyptree.yaml``: the presets of DESIGN section 5
  on the backbone's own base-to-novel schedule (MaPLe: 5 epochs, batch 4, lr 0.0035;
  PromptSRC: 20 epochs, batch 4, lr 0.0025, GPA 15/1; CoOp: 50 epochs, batch 32, lr 0.002);
* ``ablation_*.yaml`` (MaPLeHypTree, PromptSRCHypTree): ``hyptree.yaml`` with one change
  (curvature mode, image tree, pass-through, cross term);
* ``vit_b16_*_<dataset>_<k>shot.yaml``: the published few-shot schedules (DESIGN section 7);
* ``tiny_cpu.yaml``: a short CPU run (fp32, 2 epochs, 32 px, no crops, no workers) for a
  tiny CLIP and the toy datasets (the protocol scripts' default for ``toy``).
"""

import argparse
import copy
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

CLIP_INPUT = {
    "SIZE": (224, 224),
    "INTERPOLATION": "bicubic",
    "PIXEL_MEAN": [0.48145466, 0.4578275, 0.40821073],
    "PIXEL_STD": [0.26862954, 0.26130258, 0.27577711],
    "TRANSFORMS": ["random_resized_crop", "random_flip", "normalize"],
}

# Backbone sections: the published MaPLe / PromptSRC / CoOp settings.
MAPLE = {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9}
PROMPTSRC = {
    "N_CTX_VISION": 4,
    "N_CTX_TEXT": 4,
    "CTX_INIT": "a photo of a",
    "PREC": "fp16",
    "PROMPT_DEPTH_VISION": 9,
    "PROMPT_DEPTH_TEXT": 9,
    "TEXT_LOSS_WEIGHT": 25,
    "IMAGE_LOSS_WEIGHT": 10,
    "GPA_MEAN": 15,
    "GPA_STD": 1,
}
COOP = {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"}

TRAINERS = {
    # name: (backbone section key, section, base-to-novel schedule)
    "MaPLeHypTree": ("MAPLE", MAPLE, dict(epochs=5, batch=4, lr=0.0035, print_freq=20)),
    "PromptSRCHypTree": ("PROMPTSRC", PROMPTSRC, dict(epochs=20, batch=4, lr=0.0025, print_freq=20)),
    "CoOpHier": ("COOP", COOP, dict(epochs=50, batch=32, lr=0.002, print_freq=5)),
}

PRESETS = {
    "vanilla": "CoOp-family baseline: leaf cross-entropy only",
    "protect": "ProTeCt: tree-cut + node-centric losses, no image tree",
    "hyptree": "Alignment across Trees: ProTeCt losses + image tree + hyperbolic alignment",
}

ABLATIONS = {
    "euclidean": ({"CURVATURE": {"MODE": "euclidean"}}, "no hyperbolic geometry (Ours-Euc)"),
    "shared": ({"CURVATURE": {"MODE": "shared"}}, "one curvature for text, image and cross (Ours-HypV1)"),
    "separate": ({"CURVATURE": {"MODE": "separate"}}, "c_t, c_i and a free third c_m (Ours-HypV2)"),
    "no_image_tree": ({"IMAGE_TREE": False}, "every node sees the final image feature"),
    "no_pass_through": ({"PASS_THROUGH": False}, "raw intermediate class tokens"),
    "cross_angle": ({"ALIGN": {"CROSS": "angle"}}, "angle-based contrastive cross term"),
    "cross_mmd": ({"ALIGN": {"CROSS": "mmd"}}, "MMD cross term (DecAlign's homogeneity)"),
}

# DESIGN section 7: the official configs/few_shot/{1,16}-shot/<dataset>/{maple,promptsrc}+ours.yml
# of MCISLAB-Manifold-Learning/HypModalAlign, value for value (docs/fidelity.md).
# (file tag, dataset, shots, epochs, batch, lr, c0, c_t init, c_i init, scale s_t = s_i, seed, note)
PUBLISHED = {
    "MaPLeHypTree": [
        ("cifar100_1shot", "CIFAR-100", 1, 200, 8, 0.02, 0.5, 0.5, 0.5, 10.0, 1, ""),
        ("cifar100_16shot", "CIFAR-100", 16, 200, 8, 0.01, 0.05, 0.025, 0.05, 1.0, 1, ""),
        ("sun397_1shot", "SUN397", 1, 200, 8, 0.02, 0.05, 0.025, 0.05, 1.0, 1, ""),
        ("sun397_16shot", "SUN397", 16, 200, 8, 0.01, 0.05, 0.05, 0.05, 1.0, 1, ""),
        ("imagenet_1shot", "ImageNet", 1, 10, 2, 0.02, 0.5, 0.5, 0.25, 1.0, 2, ""),
        ("imagenet_16shot", "ImageNet (and the cross-domain targets)", 16, 10, 2, 0.02, 0.05, 0.025, 0.05, 1.0, 2, ""),
        ("rarespecies_1shot", "Rare Species", 1, 10, 8, 0.02, 0.05, 0.025, 0.05, 1.0, 2, "bioclip"),
        ("rarespecies_16shot", "Rare Species", 16, 10, 8, 0.03, 0.05, 0.025, 0.05, 1.0, 2, "bioclip"),
    ],
    "PromptSRCHypTree": [
        ("cifar100_1shot", "CIFAR-100", 1, 200, 8, 0.02, 0.05, 0.05, 0.025, 1.0, 1, ""),
        ("cifar100_16shot", "CIFAR-100", 16, 200, 8, 0.01, 0.05, 0.05, 0.05, 10.0, 1, ""),
        ("sun397_1shot", "SUN397", 1, 200, 8, 0.01, 0.05, 0.025, 0.05, 10.0, 1, ""),
        ("sun397_16shot", "SUN397", 16, 200, 8, 0.01, 0.05, 0.025, 0.05, 10.0, 1, ""),
        ("imagenet_1shot", "ImageNet", 1, 10, 2, 0.02, 0.05, 0.05, 0.025, 1.0, 2, ""),
        ("imagenet_16shot", "ImageNet (and the cross-domain targets)", 16, 10, 2, 0.02, 0.05, 0.025, 0.05, 1.0, 2, ""),
        ("rarespecies_1shot", "Rare Species", 1, 10, 8, 0.02, 0.5, 0.25, 0.5, 1.0, 2, "bioclip"),
        ("rarespecies_16shot", "Rare Species", 16, 10, 8, 0.03, 0.05, 0.025, 0.05, 1.0, 2, "bioclip"),
    ],
}

# The official recipe shared by every published-setting file (docs/fidelity.md): plain SGD
# (no momentum, no weight decay), constant warm-up lr 0.001 for one step, the cosine stepped
# per iteration, per-node node loss, trainable identity-initialised fusion V with Xavier q/k,
# no random crop / flip. The math fixes of DESIGN section 8 stay ours (KAPPA 3 among them).
OFFICIAL_OPTIM = {"MOMENTUM": 0.0, "WEIGHT_DECAY": 0.0, "WARMUP_CONS_LR": 0.001}
OFFICIAL_HYPTREE = {
    "NODE_LOSS": "per_node",
    "SCHEDULE": "official_per_iteration",
    "FUSION": {"LEARN_VALUE": True, "QK_INIT": "xavier"},
}
OFFICIAL_INPUT = {"TRANSFORMS": ["normalize"]}

BIOCLIP_NOTE = "Rare Species uses BioCLIP: pass TRAINER.HYPTREE.CLIP_PATH /path/to/bioclip/open_clip_pytorch_model.bin"


def hyptree_section(preset, **extra):
    h = {"PRESET": preset}
    if preset != "vanilla":
        h.update({"W_CUT": 1.0, "LAMBDA": 0.5})
    if preset == "hyptree":
        h.update(
            {
                "ALPHA": 0.5,
                "LAYERS": [4, 7, 11],
                "IMAGE_TREE": True,
                "PASS_THROUGH": True,
                "SCALE_TEXT": 10.0,
                "SCALE_IMAGE": 10.0,
                "CURVATURE": {"MODE": "intermediate", "C0": 0.05, "LEARN": True, "KAPPA": 3.0},
                "ALIGN": {"CROSS": "entailment"},
            }
        )
    _deep_update(h, extra)
    return h


def _deep_update(d, u):
    for k, v in u.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            _deep_update(d[k], v)
        else:
            d[k] = v
    return d


def config(
    trainer,
    preset,
    *,
    epochs,
    batch,
    lr,
    print_freq,
    section_update=None,
    hyptree_update=None,
    test_batch=100,
    workers=8,
    input_update=None,
    extra=None,
):
    key, section, _ = TRAINERS[trainer]
    doc = {
        "DATALOADER": {"TRAIN_X": {"BATCH_SIZE": batch}, "TEST": {"BATCH_SIZE": test_batch}, "NUM_WORKERS": workers},
        "INPUT": _deep_update(dict(CLIP_INPUT), input_update or {}),
        "OPTIM": {
            "NAME": "sgd",
            "LR": lr,
            "MAX_EPOCH": epochs,
            "LR_SCHEDULER": "cosine",
            "WARMUP_EPOCH": 1,
            "WARMUP_TYPE": "constant",
            "WARMUP_CONS_LR": 1e-5,
        },
        "TRAIN": {"PRINT_FREQ": print_freq},
        "MODEL": {"BACKBONE": {"NAME": "ViT-B/16"}},
        "TRAINER": {
            key: _deep_update(dict(section), section_update or {}),
            "HYPTREE": hyptree_section(preset, **(hyptree_update or {})),
        },
    }
    return _deep_update(doc, extra or {})


# --------------------------------------------------------------------------- yaml emission


def _scalar(v):
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, str):
        return '"' + v.replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v) if abs(v) >= 1e-3 or v == 0 else f"{v:.0e}".replace("e-0", "e-")
    if isinstance(v, tuple):
        return "(" + ", ".join(_scalar(x) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    return str(v)


def to_yaml(doc, indent=0):
    lines = []
    for k, v in doc.items():
        pad = "  " * indent
        if isinstance(v, dict):
            lines.append(f"{pad}{k}:")
            lines.extend(to_yaml(v, indent + 1))
        else:
            lines.append(f"{pad}{k}: {_scalar(v)}")
        if indent == 0:
            lines.append("")
    return lines


def render(header, doc):
    head = [f"# {line}" if line else "#" for line in header]
    return "\n".join(head + [""] + to_yaml(doc)).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- the files


def all_files():
    """{relative path: yaml text} of every generated file."""
    out = {}
    gen = "Generated by configs/trainers/generate.py - edit that file, not this one."
    for trainer, (key, _section, sched) in TRAINERS.items():
        for preset, what in PRESETS.items():
            out[f"{trainer}/{preset}.yaml"] = render(
                [
                    f"{trainer}, preset {preset}: {what}.",
                    f"Backbone's base-to-novel schedule: {sched['epochs']} epochs, batch {sched['batch']}, "
                    f"lr {sched['lr']}.",
                    gen,
                ],
                config(trainer, preset, **sched),
            )
        if trainer != "CoOpHier":
            for name, (change, what) in ABLATIONS.items():
                out[f"{trainer}/ablation_{name}.yaml"] = render(
                    [f"{trainer} ablation: {what}.", "hyptree.yaml with this one change.", gen],
                    config(trainer, "hyptree", hyptree_update=change, **sched),
                )
        for tag, dataset, shots, epochs, batch, lr, c0, c_t, c_i, scale, seed, note in PUBLISHED.get(trainer, []):
            if trainer == "MaPLeHypTree":
                name = f"vit_b16_c2_ep{epochs}_batch{batch}_2ctx_{tag}.yaml"
                section_update = {"PROMPT_DEPTH": 3}
            else:
                name = f"vit_b16_c2_ep{epochs}_batch{batch}_4+4ctx_{tag}.yaml"
                section_update = {"GPA_MEAN": 30, "GPA_STD": 30}
            header = [
                f"{trainer} on {dataset}, {shots}-shot (published few-shot setting, DESIGN section 7):",
                f"{epochs} epochs, batch {batch}, lr {lr}, c0 {c0}, c_t {c_t}, c_i {c_i}, "
                f"scale s_t = s_i = {scale}, seed {seed}.",
                "The official recipe (plain SGD, per-iteration cosine, per-node loss, trainable fusion V,",
                "no random crop/flip) with DESIGN section 8's math fixes; see docs/fidelity.md.",
            ]
            if note == "bioclip":
                header.append(BIOCLIP_NOTE + ".")
            header.append(gen)
            hyptree_update = _deep_update(
                {
                    "CURVATURE": {"C0": c0, "C_TEXT_INIT": c_t, "C_IMAGE_INIT": c_i},
                    "SCALE_TEXT": scale,
                    "SCALE_IMAGE": scale,
                },
                copy.deepcopy(OFFICIAL_HYPTREE),
            )
            out[f"{trainer}/{name}"] = render(
                header,
                config(
                    trainer,
                    "hyptree",
                    epochs=epochs,
                    batch=batch,
                    lr=lr,
                    print_freq=20,
                    section_update=section_update,
                    hyptree_update=hyptree_update,
                    input_update=OFFICIAL_INPUT,
                    extra={"OPTIM": dict(OFFICIAL_OPTIM), "SEED": seed},
                ),
            )
        tiny_section = {"PREC": "fp32"}
        tiny_section.update(
            {
                "MAPLE": {"PROMPT_DEPTH": 2},
                "COOP": {"N_CTX": 4},
                "PROMPTSRC": {"PROMPT_DEPTH_TEXT": 2, "PROMPT_DEPTH_VISION": 3, "GPA_MEAN": 2, "GPA_STD": 1},
            }[key]
        )
        out[f"{trainer}/tiny_cpu.yaml"] = render(
            [
                f"{trainer} CPU run: fp32, 2 epochs, batch 8, 32 px input, no random crops, no loader workers.",
                "For the toy datasets and a tiny CLIP (ToyWorld's pretrained default, or TRAINER.HYPTREE.CLIP_PATH);",
                "prompt depths fit its 2 text / 4 vision blocks. The scripts' default CFG for DATASET toy.",
                gen,
            ],
            config(
                trainer,
                "hyptree",
                epochs=2,
                batch=8,
                lr=0.01,
                print_freq=5,
                test_batch=32,
                workers=0,
                section_update=tiny_section,
                # no random_resized_crop: it changes the apparent size, one of ToyWorld's levels
                input_update={"SIZE": (32, 32), "TRANSFORMS": ["random_flip", "normalize"]},
            ),
        )
    return out


def main(argv=None):
    if ROOT not in sys.path:  # the checkout's hyptree, also when it is not installed
        sys.path.insert(0, ROOT)
    from hyptree.utils.files import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report files that differ")
    args = p.parse_args(argv)
    stale = []
    for rel, text in sorted(all_files().items()):
        path = os.path.join(HERE, rel)
        current = open(path, encoding="utf-8").read() if os.path.isfile(path) else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            atomic_write_text(path, text)
    verb = "differ" if args.check else "written"
    print(f"{len(stale)} file(s) {verb}" + (": " + ", ".join(stale) if stale else ""))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
