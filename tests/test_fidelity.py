"""Issue 10: the official recipe behind config keys, and the published-setting files.

Oracles: a table of the official yml values typed in here (from the official
configs/few_shot/{1,16}-shot/<dataset>/{maple,promptsrc}+ours.yml, read by hand); the official
closed-form learning rate; class tokens collected with forward hooks on a 12-block ViT.
"""

import math
import os
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import LINES

from hyptree.geometry.curvatures import Curvatures
from hyptree.loss.objective import HierarchicalObjective, ObjectiveSettings
from hyptree.loss.protect import node_centric_loss
from hyptree.model.fusion import TextGuidedSelection
from hyptree.model.loading import tiny_clip
from hyptree.model.towers import VisionTower, scale_layers
from hyptree.run.config import add_hyptree_config, check_config, default_config
from hyptree.run.training import build_lr_scheduler
from hyptree.tree import Taxonomy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (trainer, file tag, epochs, batch, lr, c0, c_t init, c_i init, s, seed): the official values
OFFICIAL = [
    ("MaPLeHypTree", "cifar100_1shot", 200, 8, 0.02, 0.5, 0.5, 0.5, 10.0, 1),
    ("MaPLeHypTree", "sun397_1shot", 200, 8, 0.02, 0.05, 0.025, 0.05, 1.0, 1),
    ("MaPLeHypTree", "imagenet_1shot", 10, 2, 0.02, 0.5, 0.5, 0.25, 1.0, 2),
    ("MaPLeHypTree", "rarespecies_1shot", 10, 8, 0.02, 0.05, 0.025, 0.05, 1.0, 2),
    ("MaPLeHypTree", "cifar100_16shot", 200, 8, 0.01, 0.05, 0.025, 0.05, 1.0, 1),
    ("MaPLeHypTree", "sun397_16shot", 200, 8, 0.01, 0.05, 0.05, 0.05, 1.0, 1),
    ("MaPLeHypTree", "imagenet_16shot", 10, 2, 0.02, 0.05, 0.025, 0.05, 1.0, 2),
    ("MaPLeHypTree", "rarespecies_16shot", 10, 8, 0.03, 0.05, 0.025, 0.05, 1.0, 2),
    ("PromptSRCHypTree", "cifar100_1shot", 200, 8, 0.02, 0.05, 0.05, 0.025, 1.0, 1),
    ("PromptSRCHypTree", "sun397_1shot", 200, 8, 0.01, 0.05, 0.025, 0.05, 10.0, 1),
    ("PromptSRCHypTree", "imagenet_1shot", 10, 2, 0.02, 0.05, 0.05, 0.025, 1.0, 2),
    ("PromptSRCHypTree", "rarespecies_1shot", 10, 8, 0.02, 0.5, 0.25, 0.5, 1.0, 2),
    ("PromptSRCHypTree", "cifar100_16shot", 200, 8, 0.01, 0.05, 0.05, 0.05, 10.0, 1),
    ("PromptSRCHypTree", "sun397_16shot", 200, 8, 0.01, 0.05, 0.025, 0.05, 10.0, 1),
    ("PromptSRCHypTree", "imagenet_16shot", 10, 2, 0.02, 0.05, 0.025, 0.05, 1.0, 2),
    ("PromptSRCHypTree", "rarespecies_16shot", 10, 8, 0.03, 0.05, 0.025, 0.05, 1.0, 2),
]


def _published_path(trainer, tag, epochs, batch):
    ctx = "2ctx" if trainer == "MaPLeHypTree" else "4+4ctx"
    return os.path.join(ROOT, "configs", "trainers", trainer, f"vit_b16_c2_ep{epochs}_batch{batch}_{ctx}_{tag}.yaml")


def test_every_published_file_is_listed():
    for trainer in ("MaPLeHypTree", "PromptSRCHypTree"):
        files = sorted(f for f in os.listdir(os.path.join(ROOT, "configs", "trainers", trainer)) if f.startswith("vit"))
        listed = sorted(os.path.basename(_published_path(*row[:2], *row[2:4])) for row in OFFICIAL if row[0] == trainer)
        assert files == listed


@pytest.mark.parametrize("row", OFFICIAL, ids=lambda r: f"{r[0]}-{r[1]}")
def test_published_file_equals_the_official_values(row):
    trainer, tag, epochs, batch, lr, c0, c_t, c_i, s, seed = row
    path = _published_path(trainer, tag, epochs, batch)
    doc = yaml.safe_load(open(path, encoding="utf-8"))
    o, h = doc["OPTIM"], doc["TRAINER"]["HYPTREE"]
    assert (o["LR"], o["MAX_EPOCH"], doc["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"]) == (lr, epochs, batch)
    assert (o["NAME"], o["MOMENTUM"], o["WEIGHT_DECAY"]) == ("sgd", 0.0, 0.0)  # plain SGD
    assert (o["LR_SCHEDULER"], o["WARMUP_EPOCH"], o["WARMUP_TYPE"], o["WARMUP_CONS_LR"]) == (
        "cosine",
        1,
        "constant",
        0.001,
    )
    c = h["CURVATURE"]
    assert (c["C0"], c["C_TEXT_INIT"], c["C_IMAGE_INIT"]) == (c0, c_t, c_i)
    assert (h["SCALE_TEXT"], h["SCALE_IMAGE"], doc["SEED"]) == (s, s, seed)
    assert h["LAYERS"] == [4, 7, 11] and h["NODE_LOSS"] == "per_node"
    assert h["SCHEDULE"] == "official_per_iteration"
    assert h["FUSION"] == {"LEARN_VALUE": True, "QK_INIT": "xavier"}
    assert (h["W_CUT"], h["LAMBDA"], h["ALPHA"]) == (1.0, 0.5, 0.5)
    assert doc["INPUT"]["TRANSFORMS"] == ["normalize"]  # no random crop / flip
    if trainer == "MaPLeHypTree":
        m = doc["TRAINER"]["MAPLE"]
        assert (m["N_CTX"], m["PROMPT_DEPTH"], m["CTX_INIT"]) == (2, 3, "a photo of a")
    else:
        p = doc["TRAINER"]["PROMPTSRC"]
        assert (p["N_CTX_TEXT"], p["N_CTX_VISION"], p["PROMPT_DEPTH_TEXT"], p["PROMPT_DEPTH_VISION"]) == (4, 4, 9, 9)
        assert (p["GPA_MEAN"], p["GPA_STD"], p["TEXT_LOSS_WEIGHT"], p["IMAGE_LOSS_WEIGHT"]) == (30, 30, 25, 10)
    assert ("CLIP_PATH" in open(path, encoding="utf-8").read()) == tag.startswith("rarespecies")  # BioCLIP note


def test_published_files_load_into_dassl_and_pass_the_check():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dassl.config import get_cfg_default
    for row in OFFICIAL[::5]:
        cfg = get_cfg_default()
        add_hyptree_config(cfg)
        cfg.merge_from_file(_published_path(*row[:2], *row[2:4]))
        cfg.TRAINER.HYPTREE.BACKBONE = "maple" if row[0] == "MaPLeHypTree" else "promptsrc"
        check_config(cfg)
        assert cfg.OPTIM.MOMENTUM == 0.0 and cfg.SEED == row[-1]


def test_generated_files_are_up_to_date():
    sys.path.insert(0, os.path.join(ROOT, "configs", "trainers"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    for rel, text in generate.all_files().items():
        assert open(os.path.join(ROOT, "configs", "trainers", rel), encoding="utf-8").read() == text, rel


# --------------------------------------------------------------------------- layers


def test_default_layers_select_the_official_blocks_on_a_12_block_vit():
    model = tiny_clip(vision_layers=12, seed=3)
    blocks = model.visual.transformer.resblocks
    block_inputs = {}  # the input of block i + 1 (its ln_1) is the output of block i
    handles = [
        b.ln_1.register_forward_pre_hook(lambda m, a, i=i: block_inputs.setdefault(i - 1, a[0][0].clone()))
        for i, b in enumerate(blocks)
    ]
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    keep = scale_layers(tuple(default_config().TRAINER.HYPTREE.LAYERS), len(blocks))
    with torch.no_grad():
        _, tokens = VisionTower(model)(images, keep_layers=keep, pass_through=False)
        final = model.encode_image(images)  # CLIP's own forward: the token after block 11
    for h in handles:
        h.remove()

    def token(i):  # class token (sequence position 0) after 0-based block i, through ln_post and proj
        return model.visual.ln_post(block_inputs[i]) @ model.visual.proj

    official = torch.stack([token(4), token(7), final], 1)
    assert keep == (5, 8)
    torch.testing.assert_close(tokens, official, atol=1e-5, rtol=0)
    wrong = torch.stack([token(3), token(6), final], 1)  # the old 1-based reading
    assert not torch.allclose(tokens, wrong, atol=1e-3)


# --------------------------------------------------------------------------- schedule


def _official_lr(it, base, T, warm=0.001):
    return warm if it == 0 else base * (1 + math.cos(math.pi * (it - 1) / T)) / 2


def _optim_cfg(lr=0.02, epochs=10):
    o = default_config().OPTIM
    o.defrost()
    o.update(
        dict(
            LR=lr, MAX_EPOCH=epochs, LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=0.001
        )
    )
    return o


def _build(o):
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.SGD(params, lr=o.LR)
    return opt, build_lr_scheduler(opt, o, "official_per_iteration")


def test_per_iteration_schedule_equals_the_official_formula_across_resume():
    o = _optim_cfg(0.02, 10)
    opt, sched = _build(o)
    seen = []
    for it in range(95):
        if it == 37:  # resume: fresh objects, state from the "checkpoint"
            state = (opt.state_dict(), sched.state_dict())
            opt, sched = _build(o)
            opt.load_state_dict(state[0])
            sched.load_state_dict(state[1])
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [_official_lr(it, 0.02, 10) for it in range(95)]
    np.testing.assert_allclose(seen, expected, rtol=0, atol=1e-15)
    assert seen[0] == 0.001 and seen[1] == 0.02 and abs(seen[11]) < 1e-15 and abs(seen[21] - 0.02) < 1e-15  # period 2T


def test_per_iteration_schedule_needs_cosine_and_a_known_name():
    o = _optim_cfg()
    o.LR_SCHEDULER = "single_step"
    with pytest.raises(ValueError, match="LR_SCHEDULER"):
        _build(o)
    with pytest.raises(ValueError, match="SCHEDULE"):
        build_lr_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), _optim_cfg(), "per_step")


# --------------------------------------------------------------------------- fusion


def test_fusion_value_projection_and_inits():
    D = 16
    g = torch.Generator().manual_seed(0)
    text, tokens = torch.randn(5, D, generator=g), torch.randn(3, 4, D, generator=g)
    ours = TextGuidedSelection(D)
    assert ours.v_proj is None and torch.equal(ours.q.weight, torch.eye(D))
    torch.manual_seed(7)
    off = TextGuidedSelection(D, learn_value=True, qk_init="xavier")
    torch.manual_seed(7)
    again = TextGuidedSelection(D, learn_value=True, qk_init="xavier")
    assert torch.equal(off.q.weight, again.q.weight) and not torch.equal(off.q.weight, off.k.weight)
    # nn.MultiheadAttention's packed (3D, D) in_proj: Xavier-uniform, bound sqrt(6 / (3D + D))
    bound = math.sqrt(6 / (4 * D))
    qk = torch.cat([off.q.weight, off.k.weight]).detach()
    assert qk.abs().max() <= bound and qk.abs().max() > 0.9 * bound
    assert abs(qk.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    assert not off.q.bias.any() and not off.k.bias.any()
    assert torch.equal(off.v_proj.weight, torch.eye(D)) and not off.v_proj.bias.any()
    assert off.v_proj.weight.requires_grad and off.v_proj.bias.requires_grad
    mixed, w = off(text, tokens, return_weights=True)
    torch.testing.assert_close(mixed, w @ tokens)  # identity V at init
    with torch.no_grad():
        off.v_proj.bias.fill_(0.5)
        off.v_proj.weight.mul_(2.0)
    torch.testing.assert_close(off(text, tokens), 2 * (w @ tokens) + 0.5)  # convex weights: V applies per token
    off(text, tokens).sum().backward()
    assert off.v_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="qk_init"):
        TextGuidedSelection(D, qk_init="random")


# --------------------------------------------------------------------------- losses, curvatures


def _tree():
    return Taxonomy.from_paths(LINES)


def test_node_loss_key_reaches_the_reduction():
    t = _tree()
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(8, t.num_nodes, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 2, 3, 4, 5])
    got = {}
    for mode in ("per_sample", "per_node"):
        obj = HierarchicalObjective(t, ObjectiveSettings(preset="protect", node_loss=mode))
        got[mode] = obj(scores, labels)["node"]
    torch.testing.assert_close(got["per_node"], node_centric_loss(t, scores, labels, average="node"))
    torch.testing.assert_close(got["per_sample"], node_centric_loss(t, scores, labels, average="sample"))
    assert not torch.allclose(got["per_node"], got["per_sample"])
    with pytest.raises(ValueError, match="node loss"):
        ObjectiveSettings(node_loss="per_leaf")


def test_separate_initial_curvatures():
    c = Curvatures(c0=0.05, c_text_init=0.025, c_image_init=0.05)
    state = c()
    assert abs(state.text.item() - 0.025) < 1e-7 and abs(state.image.item() - 0.05) < 1e-7
    assert c.log_c_min == pytest.approx(math.log(0.005)) and c.log_c_max == pytest.approx(math.log(0.5))
    default = Curvatures(c0=0.05)()
    assert abs(default.text.item() - 0.05) < 1e-7
    with pytest.raises(ValueError, match="clamp range"):
        Curvatures(c0=0.05, c_text_init=0.001)


@pytest.mark.parametrize("mode", ["separate", "shared", "intermediate"])
def test_no_image_tree_has_no_image_entailment(mode):
    t = _tree()
    g = torch.Generator().manual_seed(2)
    D = 8
    scores = torch.randn(6, t.num_nodes, generator=g)
    labels = torch.arange(6)
    text = torch.randn(t.num_nodes, D, generator=g)
    settings = ObjectiveSettings(preset="hyptree")
    flat = HierarchicalObjective(t, settings, Curvatures(mode=mode))
    out = flat(scores, labels, text, torch.randn(6, D, generator=g))
    assert "image_ent" not in out
    torch.testing.assert_close(out["total"], out["cut"] + 0.5 * out["node"] + 0.5 * (out["text_ent"] + out["cross"]))
    out["total"].backward()
    if mode == "separate":  # c_i enters only through J_Vent: no gradient at all
        grad = flat.curvatures.log_c_image.grad
        assert grad is None or grad.abs().item() == 0
    tree = HierarchicalObjective(t, settings, Curvatures(mode="separate"))
    out = tree(scores, labels, text, F.normalize(torch.randn(6, t.num_nodes, D, generator=g), dim=-1))
    assert "image_ent" in out
    out["total"].backward()
    assert tree.curvatures.log_c_image.grad.abs().item() > 0


# --------------------------------------------------------------------------- reference base/novel


def _write_reference(folder):
    from test_taxonomy_io import NESTED, make_protect_tree

    folder.mkdir(parents=True)
    make_protect_tree(str(folder / "tree.npy"), NESTED)
    # leaves (DFS): canoe liner jar vase bottle_cap lens_cap beret baseball_cap coat
    base = {
        "object": {"vessel": {"canoe": {}}, "container": {"vessel_1": {"jar": {}}, "cap_1": {"bottle_cap": {}}}},
        "garment": {"cap_2": {"beret": {}}, "coat": {}},
    }
    make_protect_tree(str(folder / "tree_base.npy"), base)
    np.save(folder / "relabeler_base.npy", {0: 0, 2: 1, 4: 2, 6: 3, 8: 4}, allow_pickle=True)
    np.save(folder / "relabeler_novel.npy", {1: 0, 3: 1, 5: 2, 7: 3}, allow_pickle=True)
    cuts = {
        0: [("object", "garment"), [0, 0, 0, 1, 1]],
        1: [("vessel", "container", "garment"), [0, 1, 1, 2, 2]],
    }
    torch.save(cuts, folder / "treecuts_25_multi_base.pkl")


def test_reference_split_reads_the_official_files(tmp_path):
    from hyptree.data.reference import reference_split
    from hyptree.tree.cutfiles import load_protect_cuts
    from hyptree.tree.io.protect import read_protect_tree

    _write_reference(tmp_path / "protect" / "cifar100")
    full = read_protect_tree(str(tmp_path / "protect" / "cifar100" / "tree.npy"))
    # this run's tree lists the classes in another order: matching is by name
    full = full.subtree(list(reversed(full.class_names)))
    labels, cuts_file = reference_split(str(tmp_path), ("cifar100",), "cifar100", "base", full)
    assert [full.class_names[k] for k in labels] == ["canoe", "jar", "bottle_cap", "beret", "coat"]
    base = full.subtree([int(k) for k in labels])
    assert base.height == full.height and "container" in base  # depths and single-child chains kept
    cuts = load_protect_cuts(cuts_file, base)
    assert [sorted(base.names[i] for i in c) for c in cuts] == [
        ["garment", "object"],
        ["container", "garment", "vessel"],
    ]
    novel, novel_cuts = reference_split(str(tmp_path), ("cifar100",), "cifar100", "new", full)
    assert [full.class_names[k] for k in novel] == ["liner", "vase", "lens_cap", "baseball_cap"]
    assert novel_cuts == ""  # no novel cut file written: seeded cuts (with a warning)


def test_reference_split_errors(tmp_path):
    from hyptree.data.reference import reference_split
    from hyptree.tree.io.protect import read_protect_tree

    folder = tmp_path / "protect" / "cifar100"
    with pytest.raises(FileNotFoundError, match="relabeler_base.npy"):
        reference_split(str(tmp_path), ("cifar100",), "cifar100", "base", Taxonomy.from_paths(LINES))
    _write_reference(folder)
    full = read_protect_tree(str(folder / "tree.npy"))
    np.save(folder / "relabeler_base.npy", {0: 0, 3: 1, 4: 2, 6: 3, 8: 4}, allow_pickle=True)  # not tree_base's
    with pytest.raises(ValueError, match="tree_base.npy"):
        reference_split(str(tmp_path), ("cifar100",), "cifar100", "base", full)
    np.save(folder / "relabeler_base.npy", {0: 1, 2: 0}, allow_pickle=True)
    with pytest.raises(ValueError, match="0..1"):
        reference_split(str(tmp_path), ("cifar100",), "cifar100", "base", full)
    cfg = default_config()
    cfg.DATASET.SUBSAMPLE_SPLIT = "reference"
    check_config(cfg)


# --------------------------------------------------------------------------- per-depth accuracy


def test_official_per_depth_accuracy_by_brute_force():
    from hyptree.eval.metrics import hierarchical_metrics

    t = _tree()  # leaves at depth 2 (cat, boat) and 3
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(40, t.num_nodes, generator=g)
    labels = torch.randint(0, t.num_classes, (40,), generator=g)
    got = hierarchical_metrics(t, scores, labels, depth="official")["depth_acc"]
    for d in range(1, t.height + 1):
        correct = total = 0
        for x, k in zip(scores, labels.tolist()):
            node = int(t.leaves[k])
            chain = [node]
            while t.parent[chain[-1]] >= 0:
                chain.append(int(t.parent[chain[-1]]))
            at_d = [n for n in chain if t.depth[n] == d]
            if not at_d:
                continue  # leaf shallower than d: drops out
            candidates = [n for n in range(t.num_nodes) if t.depth[n] == d]  # leaves included
            total += 1
            correct += max(candidates, key=lambda n: x[n].item()) == at_d[0]
        assert got[d - 1] == pytest.approx(100.0 * correct / total)
    with pytest.raises(ValueError, match="depth accuracy"):
        hierarchical_metrics(t, scores, labels, depth="both")


# --------------------------------------------------------------------------- paper tables


def test_paper_results_ship_with_the_package():
    from hyptree.eval.paper import paper_key, paper_rows

    rows = paper_rows()
    assert len(rows) == 48  # 2 backbones x 3 methods x 2 shots x 4 datasets
    assert rows[("PromptSRC", "+ProTeCt", 1, "ImageNet")]["HCA"] == 20.36  # README value (project page: 21.58)
    assert rows[("MaPLe", "+Ours", 16, "CIFAR-100")] == {"LA": 77.92, "HCA": 69.38, "MTA": 90.89}
    assert paper_key("CIFAR100Hier", "MaPLeHypTree", "vit_b16_c2_ep200_batch8_2ctx_cifar100_16shot", 16) == (
        "MaPLe",
        "+Ours",
        16,
        "CIFAR-100",
    )
    assert paper_key("sun397", "PromptSRCHypTree", "protect", "1") == ("PromptSRC", "+ProTeCt", 1, "SUN")
    assert paper_key("ToyHier", "MaPLeHypTree", "tiny_cpu", 4) is None
    assert "paper_results.csv" in open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()


def test_results_paper_flag(tmp_path, capsys):
    import fixtures_runs as runs

    from hyptree.eval import results as tables

    run = (
        tmp_path
        / "paper"
        / "CIFAR100Hier"
        / "shots_16"
        / "MaPLeHypTree"
        / "vit_b16_c2_ep200_batch8_2ctx_cifar100_16shot"
    )
    runs.write_results(run / "seed1", metrics={"LA": 77.0, "HCA": 70.0})
    assert tables.main([str(tmp_path / "paper"), "--paper"]) == 0
    out = capsys.readouterr().out
    assert "paper LA/HCA/MTA" in out and "77.92 / 69.38 / 90.89" in out and "-0.92 / +0.62 / -30.89" in out
    runs.write_results(tmp_path / "toy" / "ToyHier" / "tiny_cpu" / "seed1", dataset="ToyHier", num_shots=4)
    assert tables.main([str(tmp_path / "toy"), "--paper"]) == 0
    assert "no paper row matches" in capsys.readouterr().out
