"""ToyWorld's tree and images, and the tiny CLIP pretraining on its captions."""

import os

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
