"""Plots: the projection math against independent formulas, and every plot on generated run files."""

import json
import math

import fixtures_runs as F
import numpy as np
import pytest
import torch

from hyptree.eval import disk, viz
from hyptree.geometry import lorentz

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG


# --------------------------------------------------------------------------- projection math


@pytest.mark.parametrize("c", [0.01, 0.05, 0.5, 2.0])
def test_poincare_disk_matches_lorentz_exp_map_and_tanh(c):
    rng = np.random.default_rng(0)
    d = rng.normal(size=(64, 2))
    # sqrt(c)|v| up to 8: inside the library's sinh cap (11.09), and far into the disk's rim
    v = d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(0.01, 8.0 / math.sqrt(c), size=(64, 1))
    p = disk.to_poincare_disk(v, c)
    # oracle 1: the library's Lorentz exponential map, then x / (1 + sqrt(c) t), scaled to the unit disk
    x = lorentz.exp_map0(torch.tensor(v), c)
    t = lorentz.time_component(x, c).unsqueeze(-1)
    oracle = (math.sqrt(c) * x / (1 + math.sqrt(c) * t)).numpy()
    np.testing.assert_allclose(p, oracle, rtol=1e-9, atol=1e-12)
    # oracle 2: closed form radius tanh(sqrt(c)|v|/2), direction kept
    r = np.linalg.norm(v, axis=1)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), np.tanh(math.sqrt(c) * r / 2), rtol=1e-9)
    np.testing.assert_allclose(p / np.linalg.norm(p, axis=1, keepdims=True), v / r[:, None], atol=1e-9)


def test_poincare_disk_extremes_stay_finite_and_inside():
    v = np.array([[0.0, 0.0], [1e-12, 0.0], [1e4, 0.0]])
    p = disk.to_poincare_disk(v, 10.0)
    assert np.isfinite(p).all() and (np.linalg.norm(p, axis=1) <= 1.0).all()
    assert np.allclose(p[0], 0) and p[2, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="> 0"):
        disk.to_poincare_disk(v, float("nan"))


def test_project_2d_is_a_scaled_isometry_on_planar_data():
    """Unit vectors in one 2-D plane of R^D: PCA keeps their distances up to one factor."""
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(16, 2)))
    ang = rng.uniform(0, 2 * np.pi, size=12)
    feats = 3.0 * (np.cos(ang)[:, None] * basis[:, 0] + np.sin(ang)[:, None] * basis[:, 1])
    feats = np.vstack([feats, np.full(16, np.nan)])
    y = disk.project_2d(feats, scale=7.0)
    assert np.isnan(y[-1]).all()
    y = y[:-1]
    assert np.linalg.norm(y, axis=1).max() == pytest.approx(7.0)
    u = feats[:-1] / 3.0
    d_in = np.linalg.norm(u[:, None] - u[None], axis=-1)
    d_out = np.linalg.norm(y[:, None] - y[None], axis=-1)
    ratio = d_out[d_in > 1e-6] / d_in[d_in > 1e-6]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-8)


def test_node_depths_and_cycles():
    names, parent = F.tree((2, 3))
    d = disk.node_depths(parent)
    assert d[0] == 0 and (d[1:3] == 1).all() and (d[3:] == 2).all()
    with pytest.raises(ValueError, match="cycle"):
        disk.node_depths(np.array([-1, 2, 1]))
    with pytest.raises(ValueError, match="outside"):
        disk.node_depths(np.array([-1, 7]))


def _poincare_dist(a, b):
    na, nb = abs(a) ** 2, abs(b) ** 2
    return math.acosh(1 + 2 * abs(a - b) ** 2 / ((1 - na) * (1 - nb)))


def test_geodesic_edges_are_hyperbolic_geodesics():
    a, b = 0.3 + 0.5j, -0.6 + 0.2j
    pts = disk.geodesic(a, b, num=9)
    z = pts[:, 0] + 1j * pts[:, 1]
    assert z[0] == pytest.approx(a) and z[-1] == pytest.approx(b)
    total = _poincare_dist(a, b)
    for k, zk in enumerate(z):  # arc-length parametrised: d(a, z_k) = k/8 d(a, b), and on the path
        assert _poincare_dist(a, zk) == pytest.approx(total * k / 8, abs=1e-9)
        assert _poincare_dist(a, zk) + _poincare_dist(zk, b) == pytest.approx(total, abs=1e-9)


# --------------------------------------------------------------------------- plots


def test_plot_curvatures_and_x_axis(tmp_path):
    F.write_train_log(str(tmp_path), epochs=3, iters=4)
    out = viz.plot_curvatures(str(tmp_path / "train_log.jsonl"), str(tmp_path / "c.png"))
    assert _is_png(out)
    recs = viz.read_train_log(str(tmp_path / "train_log.jsonl"))
    x, label = viz._x_axis(recs)  # per-epoch iteration counters: fractional epochs
    assert label == "epoch" and x[4] == 1.0 and x[5] == pytest.approx(1.25) and np.all(np.diff(x) > 0)
    F.write_train_log(str(tmp_path), global_iteration=True)
    x, label = viz._x_axis(viz.read_train_log(str(tmp_path / "train_log.jsonl")))
    assert label == "iteration" and list(x[:3]) == [0, 1, 2]


def test_plot_curvatures_refuses_euclidean_log(tmp_path):
    F.write_train_log(str(tmp_path), euclidean=True)
    with pytest.raises(ValueError, match="no curvature values"):
        viz.plot_curvatures(str(tmp_path / "train_log.jsonl"), str(tmp_path / "c.png"))
    assert _is_png(viz.plot_losses(str(tmp_path / "train_log.jsonl"), str(tmp_path / "l.png")))


def test_read_train_log_skips_bad_lines(tmp_path):
    p = tmp_path / "train_log.jsonl"
    p.write_text('{"epoch": 0, "iteration": 0, "total": 1.0}\n\nnot json\n{"epoch": 0, "iteration": 1}\n')
    with pytest.warns(UserWarning, match="train_log.jsonl:3"):
        assert len(viz.read_train_log(str(p))) == 2
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no log records"):
        viz.read_train_log(str(tmp_path / "empty.jsonl"))


def test_plot_depth_accuracy_mixed_inputs(tmp_path):
    F.write_results(tmp_path / "a")
    out = viz.plot_depth_accuracy(
        [
            str(tmp_path / "a"),
            str(tmp_path / "a" / "results.json"),
            F.record(preset="protect", metrics={"depth_acc": [80.0, 70.0, 60.0, 50.0]}),
        ],
        str(tmp_path / "d.png"),
    )
    assert _is_png(out)
    with pytest.raises(ValueError, match="2 labels for 1 results"):
        viz.plot_depth_accuracy([F.record()], str(tmp_path / "x.png"), labels=["a", "b"])
    with pytest.raises(ValueError, match="no metrics.depth_acc"):
        viz.plot_depth_accuracy(F.record(metrics={"depth_acc": []}), str(tmp_path / "x.png"))


def test_poincare_figure_panels(tmp_path):
    F.write_embeddings(str(tmp_path))
    fig = viz.poincare_figure(str(tmp_path / "embeddings.npz"))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["text tree (c_t = 0.08)", "image tree (c_i = 0.03)", "joint (c_m = 0.05)"]
    # every drawn node lies inside the unit disk; the image panel drops the NaN node
    offsets = [
        c.get_offsets() for ax in fig.axes for c in ax.collections if hasattr(c, "get_sizes") and len(c.get_sizes())
    ]
    assert all((np.linalg.norm(o, axis=1) < 1).all() for o in offsets)
    n = len(F.tree()[0])
    assert [len(o) for o in offsets] == [n, n - 1, n, n - 1]
    assert _is_png(viz.plot_poincare(str(tmp_path / "embeddings.npz"), str(tmp_path / "p.png")))


def test_poincare_euclidean_and_text_only(tmp_path):
    F.write_embeddings(str(tmp_path), euclidean=True)
    fig = viz.poincare_figure(str(tmp_path / "embeddings.npz"))
    assert all(ax.get_title().endswith("(euclidean)") for ax in fig.axes)
    names, parent = F.tree((2, 2))
    text = np.random.default_rng(0).normal(size=(len(names), 8))
    fig = viz.poincare_figure(
        {
            "text": text,
            "image": np.full_like(text, np.nan),
            "parent": parent,
            "names": np.asarray(names),
            "curv_text": 0.1,
        }
    )
    assert [ax.get_title() for ax in fig.axes] == ["text tree (c_t = 0.1)"]
    with pytest.raises(ValueError, match="missing array 'text'"):
        viz.poincare_figure({"parent": parent})
    with pytest.raises(ValueError, match="disagree"):
        viz.poincare_figure({"text": text[:3], "parent": parent})


def test_plot_run_writes_what_applies(tmp_path):
    hyp, euc = tmp_path / "hyp", tmp_path / "euc"
    F.write_full_run(str(hyp))
    F.write_full_run(str(euc), euclidean=True, curvature_mode="euclidean")
    assert sorted(p.split("/")[-1] for p in viz.plot_run(str(hyp))) == [
        "curvatures.png",
        "depth_acc.png",
        "losses.png",
        "poincare.png",
    ]
    assert sorted(p.split("/")[-1] for p in viz.plot_run(str(euc))) == ["depth_acc.png", "losses.png", "poincare.png"]
    assert not (euc / "curvatures.png").exists()
    assert all(_is_png(hyp / f) for f in ("curvatures.png", "depth_acc.png", "losses.png", "poincare.png"))
    json.loads((hyp / "results.json").read_text())  # untouched


def test_project_2d_puts_zero_rows_at_origin_and_ignores_them():
    from hyptree.eval.disk import project_2d

    g = np.random.default_rng(0)
    feats = g.normal(size=(6, 5))
    with_root = np.vstack([np.zeros((1, 5)), feats])
    out = project_2d(with_root)
    assert np.array_equal(out[0], [0.0, 0.0])
    np.testing.assert_allclose(np.abs(out[1:]), np.abs(project_2d(feats)), atol=1e-9)


def test_loss_keys_leave_out_the_batch_index(tmp_path):
    from hyptree.eval import TrainLog
    from hyptree.eval.viz import loss_keys, read_train_log

    log = TrainLog(str(tmp_path / "train_log.jsonl"))
    for it in range(6):  # the fields the trainers write (trainers/hyptree_base.py)
        log.append(epoch=1 + it // 3, iteration=it, batch=it % 3, lr=0.002, total=2.0 - 0.1 * it)
        log.append(epoch=1 + it // 3, iteration=it, batch=it % 3, cut=1.0, curv_text=1.0)
    log.close()
    assert loss_keys(read_train_log(str(tmp_path / "train_log.jsonl"))) == ["total", "cut"]
