"""ToyWorld's tree and images, and the tiny CLIP pretraining on its captions."""

import os
import time

import numpy as np
import torch

from hyptree.data import toy_world as W
from hyptree.run import toyclip
from hyptree.tree.io import read_paths_file


def test_tree_shape_levels_leaves_unbalanced(tmp_path):
    d = W.make_world_dataset(str(tmp_path), n_train=1, n_val=1, n_test=1, progress=False)
    tax = read_paths_file(os.path.join(W.world_dir(str(tmp_path), n_train=1, n_val=1, n_test=1), "hierarchy.txt"))
    lines = W.world_hierarchy_lines()
    assert len(d.classnames) == len(lines) == 52 and len(set(d.classnames)) == 52
    assert all(line.count("/") == 3 for line in lines)  # 4 levels below the root
    assert tax.num_classes == 52
    # unbalanced: shapes have different numbers of leaves; siblings differ in one attribute only
    per_shape = {s: sum(line.startswith(s + "/") for line in lines) for s in W.WORLD}
    assert len(set(per_shape.values())) > 1, per_shape
    small, large = "small_red_striped_circle", "large_red_striped_circle"
    assert f"circle/red_circle/red_striped_circle/{small}" in lines and small.replace("small", "large") == large


def test_generation_is_deterministic_and_never_the_pretraining_stream(tmp_path):
    kw = dict(n_train=1, n_val=1, n_test=1, progress=False)
    a = W.make_world_dataset(str(tmp_path / "a"), **kw)
    b = W.make_world_dataset(str(tmp_path / "b"), **kw)
    for x, y in zip(a.train, b.train):
        assert open(x.impath, "rb").read() == open(y.impath, "rb").read()
    imgs, labels = W.sample_world(4, seed=0)
    imgs2, labels2 = W.sample_world(4, seed=0)
    assert np.array_equal(imgs, imgs2) and np.array_equal(labels, labels2)
    from PIL import Image

    first = np.asarray(Image.open(a.train[0].impath))
    assert not any(np.array_equal(first, im) for im in W.sample_world(64, seed=0)[0])


def test_short_text_encoder_equals_clip_encode_text():
    import clip

    from hyptree.model.loading import tiny_clip

    m = tiny_clip(embed_dim=32, transformer_width=64, transformer_heads=1)
    t = clip.tokenize(["a photo of a red circle.", "a small blue dotted square"])
    torch.testing.assert_close(toyclip.encode_text_short(m, t), m.encode_text(t), atol=1e-5, rtol=1e-5)


def test_pretraining_lowers_the_contrastive_loss():
    spec = toyclip.PretrainSpec(steps=12, batch=32, pool=256, lr=3e-3)
    _, losses = toyclip.pretrain_toy_clip(spec, progress=False)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses


TINY = toyclip.PretrainSpec(vision_layers=1, text_layers=1, steps=3, batch=16, pool=48)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_cached_model_loads_and_equals_a_fresh_pretraining(tmp_path, monkeypatch):
    from hyptree.model.loading import load_clip

    path = toyclip.toy_clip_path(str(tmp_path), TINY, progress=False)
    assert os.path.dirname(path) == str(tmp_path / toyclip.TOY_CLIP_DIR) and TINY.tag() in path
    fresh, _ = toyclip.pretrain_toy_clip(TINY, progress=False)
    cached = _state(load_clip(path))
    want = _state(fresh)
    assert cached.keys() == want.keys()
    for k in want:
        assert torch.equal(cached[k], want[k]), k
    # trained rows of the token embedding were written back; the others are tiny_clip's init
    from hyptree.model.loading import tiny_clip

    init = tiny_clip(embed_dim=64, vision_layers=1, transformer_width=64, transformer_heads=1, transformer_layers=1)
    changed = (want["token_embedding.weight"] != init.token_embedding.weight).any(1)
    assert 0 < int(changed.sum()) < 200
    # a second use reads the cache: no pretraining
    monkeypatch.setattr(toyclip, "pretrain_toy_clip", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    assert toyclip.toy_clip_path(str(tmp_path), TINY, progress=False) == path


def _first_use(root, events):
    """A child process's first use of the cache; the build is slowed so the two overlap."""
    real = toyclip.pretrain_toy_clip

    def slow(*args, **kw):
        events.put("built")
        time.sleep(1.0)
        return real(*args, **kw)

    toyclip.pretrain_toy_clip = slow
    events.put(toyclip.toy_clip_path(root, TINY, progress=False))


def test_two_processes_on_first_use_make_one_complete_cache(tmp_path):
    import multiprocessing

    from hyptree.model.loading import load_clip

    ctx = multiprocessing.get_context("fork")  # the children share the imports: no 10 s start
    events = ctx.Queue()
    procs = [ctx.Process(target=_first_use, args=(str(tmp_path), events)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    got = [events.get(timeout=5) for _ in range(3)]
    assert got.count("built") == 1, got  # one process built, the other waited for it
    paths = {g for g in got if g != "built"}
    assert len(paths) == 1
    path = paths.pop()
    folder = tmp_path / toyclip.TOY_CLIP_DIR
    assert sorted(f for f in os.listdir(folder) if not f.endswith(".lock")) == [os.path.basename(path)]
    fresh, _ = toyclip.pretrain_toy_clip(TINY, progress=False)
    cached = load_clip(path).state_dict()
    assert all(torch.equal(cached[k], v) for k, v in fresh.state_dict().items())


def test_pretrain_clip_command_writes_the_model_and_reports_its_zero_shot_accuracy(tmp_path, capsys):
    from hyptree.model.loading import load_clip

    out, data = tmp_path / "m" / "toy_clip.pt", str(tmp_path / "data")
    argv = ["pretrain-clip", str(out), "--data", data, "--vision-layers", "1", "--text-layers", "1", "--steps", "2"]
    assert toyclip.main(argv + ["--batch", "8", "--pool", "16", "--flip", "false"]) == 0
    printed = capsys.readouterr().out
    d = W.make_world_dataset(data, progress=False)
    acc = toyclip.zero_shot_accuracy(load_clip(str(out)), d.test, d.classnames)
    assert f"zero-shot leaf accuracy on the ToyWorld test set {acc:.2f} %" in printed
    assert "52 classes, chance 1.92 %" in printed
