"""hyptree.eval.evaluate without Dassl: streaming evaluation, run outputs, cuts, hashes, log."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import LINES, RECORD_KEYS, make_model

from hyptree.eval.evaluate import evaluate
from hyptree.eval.metrics import hierarchical_metrics
from hyptree.eval.runfiles import format_metrics, write_run
from hyptree.eval.trainlog import TrainLog
from hyptree.run.config import default_config
from hyptree.run.records import config_hash, evaluation_cuts_for, run_record
from hyptree.tree import Taxonomy, evaluation_cuts, load_cuts, save_cuts
from hyptree.tree.io import read_paths_file


@pytest.fixture(scope="module")
def taxonomy():
    return Taxonomy.from_paths(LINES)


def data(n, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.as_tensor(labels) if labels is not None else torch.randint(0, 6, (n,), generator=g)
    return x, y


def batches(x, y, sizes, as_dict=False):
    out, start = [], 0
    for s in sizes:
        xb, yb = x[start : start + s], y[start : start + s]
        out.append({"img": xb, "label": yb} if as_dict else (xb, yb))
        start += s
    assert start == len(x)
    return out


@pytest.mark.parametrize("preset", ["vanilla", "hyptree"])
def test_evaluate_equals_metrics_on_all_scores(taxonomy, preset):
    model = make_model(taxonomy, preset=preset)
    x, y = data(11)
    cuts = evaluation_cuts(taxonomy, 6, seed=3)
    with torch.no_grad():
        model.eval()
        scores = model.node_scores(x)
    expected = hierarchical_metrics(taxonomy, scores, y, cuts)
    for as_dict in (False, True):
        metrics, _ = evaluate(model, batches(x, y, [4, 4, 3], as_dict), taxonomy, cuts)
        assert metrics.keys() == expected.keys()
        for key in ("LA", "HCA", "MTA", "node_acc", "num_samples"):
            assert metrics[key] == pytest.approx(expected[key]), key
        np.testing.assert_allclose(metrics["depth_acc"], expected["depth_acc"])
        np.testing.assert_allclose(metrics["cut_acc"], expected["cut_acc"])


def test_one_vision_pass_per_batch_and_text_once(taxonomy):
    model = make_model(taxonomy)
    x, y = data(10)
    vision, text = model.vision_tower.calls, model.text_tower.calls
    evaluate(model, batches(x, y, [3, 3, 3, 1]), taxonomy, None)
    assert model.vision_tower.calls - vision == 4
    assert model.text_tower.calls - text == 1


def test_evaluate_restores_modes_and_taxonomy(taxonomy):
    model = make_model(taxonomy)
    model.train()
    model.clip.eval()
    sub = taxonomy.subtree(["sparrow", "sedan", "boat"])
    x, _ = data(5)
    y = torch.tensor([0, 1, 2, 0, 1])  # labels of the sub-tree
    metrics, emb = evaluate(model, [(x, y)], sub, None)
    assert metrics["num_samples"] == 5 and emb["text"].shape[0] == sub.num_nodes
    assert model.taxonomy == taxonomy and model.prompt_learner.num_names == taxonomy.num_nodes - 1
    assert model.training and model.prompt_learner.training and not model.clip.training
    assert math.isnan(metrics["MTA"])  # no cuts given


def test_embeddings_are_per_node_means_of_the_scored_features(taxonomy):
    model = make_model(taxonomy).eval()
    x, _ = data(6)
    y = torch.tensor([0, 0, 1, 3, 3, 2])  # no vehicle/boat (5) nor coupe (4) sample
    _, emb = evaluate(model, batches(x, y, [4, 2]), taxonomy, None)
    with torch.no_grad():
        text = model.precompute_text()
        final, tokens = model.image_features(x)
        feats = F.normalize(model.node_image_features(text, final, tokens), dim=-1)  # (B, N, D)
    n = taxonomy.num_nodes
    want = np.full((n, feats.shape[-1]), np.nan)
    counts = np.zeros(n, dtype=int)
    for node in range(n):
        rows = [b for b in range(len(y)) if node == 0 or node in taxonomy.path(int(y[b]))]
        counts[node] = len(rows)
        if rows:
            want[node] = feats[rows, node].mean(0).numpy()
    np.testing.assert_array_equal(emb["counts"], counts)
    np.testing.assert_allclose(emb["image"], want, rtol=1e-5, atol=1e-6)
    assert np.isnan(emb["image"][taxonomy.index("boat")]).all()
    assert counts[taxonomy.index("vehicle")] == 2 and counts[0] == 6
    t = emb["text"]
    assert np.all(t[0] == 0) and np.allclose(np.linalg.norm(t[1:], axis=1), 1.0, atol=1e-5)
    assert 0 < emb["curv_text"] and 0 < emb["curv_image"]
    assert (
        min(emb["curv_text"], emb["curv_image"]) - 1e-9
        <= emb["curv_inter"]
        <= max(emb["curv_text"], emb["curv_image"]) + 1e-9
    )


def test_vanilla_embeddings_share_the_final_feature_and_have_no_curvature(taxonomy):
    model = make_model(taxonomy, preset="vanilla").eval()
    x, y = data(4, labels=[0, 1, 2, 5])
    _, emb = evaluate(model, [(x, y)], taxonomy, None)
    with torch.no_grad():
        final = F.normalize(model.image_features(x)[0], dim=-1)
    np.testing.assert_allclose(emb["image"][0], final.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb["image"][taxonomy.index("bird")], final[:2].mean(0).numpy(), rtol=1e-5, atol=1e-6)
    assert all(math.isnan(emb[k]) for k in ("curv_text", "curv_image", "curv_inter"))
    euclid = make_model(taxonomy, **{"CURVATURE.MODE": "euclidean"}).eval()
    _, emb = evaluate(euclid, [(x, y)], taxonomy, None)
    assert math.isnan(emb["curv_inter"])


def test_write_run_files_parse_back(taxonomy, tmp_path):
    model = make_model(taxonomy)
    x, y = data(7)
    cuts = evaluation_cuts(taxonomy, 5, seed=1)
    metrics, emb = evaluate(model, batches(x, y, [7]), taxonomy, cuts)
    cfg = default_config()
    cfg.DATASET.NAME, cfg.TRAINER.NAME, cfg.OUTPUT_DIR = "Toy", "MaPLeHypTree", str(tmp_path)
    curv = {k: float(emb[f"curv_{k}"]) for k in ("text", "image", "inter")}
    rec = run_record(
        cfg,
        metrics,
        split="test",
        tree="base",
        taxonomy=taxonomy,
        taxonomy_source="lines",
        epoch=3,
        model_dir="/ckpt",
        curvatures=curv,
        num_cuts=len(cuts),
    )
    paths = write_run(str(tmp_path / "run"), rec, taxonomy, cuts, emb)
    back = json.load(open(paths["results"]))
    assert RECORD_KEYS <= set(back)
    assert back["metrics"]["LA"] == pytest.approx(metrics["LA"])
    assert back["metrics"]["depth_acc"] == pytest.approx(metrics["depth_acc"])
    assert (back["split"], back["tree"], back["epoch"], back["model_dir"]) == ("test", "base", 3, "/ckpt")
    assert back["taxonomy"] == json.loads(json.dumps(taxonomy.stats()))
    assert back["config_hash"] == config_hash(cfg) and back["curvatures"] == pytest.approx(curv)
    assert back["image_tree"] is True and back["backbone"] == "maple" and back["num_shots"] == -1
    assert load_cuts(paths["cuts"], taxonomy) == [tuple(c) for c in cuts]
    assert read_paths_file(paths["taxonomy"]) == taxonomy
    npz = np.load(paths["embeddings"])
    assert {"text", "image", "names", "parent", "curv_text", "curv_image", "curv_inter"} <= set(npz.files)
    assert list(npz["names"]) == list(taxonomy.names)
    np.testing.assert_array_equal(npz["parent"], taxonomy.parent)
    np.testing.assert_array_equal(npz["image"], emb["image"])
    assert float(npz["curv_inter"]) == pytest.approx(curv["inter"])


def test_record_writes_nan_as_null_and_no_curvatures(taxonomy, tmp_path):
    cfg = default_config()
    cfg.TRAINER.HYPTREE.PRESET = "protect"
    metrics = {
        "LA": 50.0,
        "HCA": 25.0,
        "MTA": math.nan,
        "node_acc": 60.0,
        "depth_acc": [70.0, 50.0],
        "node_accs": [1.0, math.nan],
        "num_samples": 4,
    }
    rec = run_record(
        cfg,
        metrics,
        split="val",
        tree="all",
        taxonomy=taxonomy,
        curvatures={"text": math.nan, "image": math.nan, "inter": math.nan},
    )
    assert rec["curvatures"] is None and rec["image_tree"] is False and rec["epoch"] is None
    paths = write_run(str(tmp_path), rec, taxonomy, [], results_name="results_val.json")
    text = open(paths["results"]).read()
    assert "NaN" not in text
    back = json.loads(text)
    assert back["metrics"]["MTA"] is None and back["metrics"]["node_accs"] == [1.0, None]
    assert load_cuts(paths["cuts"], taxonomy) == []
    assert "embeddings" not in paths


def test_config_hash_stable_sensitive_and_ignores_volatile_keys():
    a, b = default_config(), default_config()
    assert config_hash(a) == config_hash(b) == config_hash(a.clone())
    assert len(config_hash(a)) == 40
    b.freeze()
    assert config_hash(b) == config_hash(a)  # freezing is not content
    c = default_config()
    c.TRAINER.HYPTREE.ALPHA = 0.25
    assert config_hash(c) != config_hash(a)
    d = default_config()
    d.SEED, d.OUTPUT_DIR = 7, "/elsewhere"
    assert config_hash(d) == config_hash(a)
    assert config_hash(d, ignore=()) != config_hash(a, ignore=())
    assert d.SEED == 7 and d.OUTPUT_DIR == "/elsewhere"  # the config itself is untouched


def test_evaluation_cuts_for_every_source(taxonomy, tmp_path):
    cfg = default_config()
    cfg.TRAINER.HYPTREE.EVAL.NUM_CUTS = 5
    cfg.TRAINER.HYPTREE.EVAL.CUT_SEED = 4
    generated = evaluation_cuts_for(cfg, taxonomy)
    assert generated == evaluation_cuts(taxonomy, 5, 4, (0.9, 0.7, 0.5, 0.3, 0.1))
    cuts = [["animal", "vehicle"], ["bird", "cat", "car", "boat"]]
    path = tmp_path / "cuts.json"
    save_cuts(str(path), taxonomy, cuts)
    cfg.TRAINER.HYPTREE.EVAL.CUTS_FILE = str(path)
    assert evaluation_cuts_for(cfg, taxonomy) == [tuple(taxonomy.index(n) for n in c) for c in cuts]
    pkl = tmp_path / "treecuts.pkl"
    pkl.write_bytes(pickle.dumps({0: ["animal", "vehicle"], 1: ["sparrow", "eagle", "cat", "car", "boat"]}))
    cfg.TRAINER.HYPTREE.EVAL.CUTS_FILE = str(pkl)
    assert len(evaluation_cuts_for(cfg, taxonomy)) == 2
    # a full-tree file projected onto the novel sub-tree
    sub = taxonomy.subtree(["eagle", "cat", "coupe"])
    cfg.TRAINER.HYPTREE.EVAL.CUTS_FILE = str(path)
    with pytest.raises(ValueError):
        evaluation_cuts_for(cfg, sub)
    with pytest.warns(UserWarning, match="projected"):
        projected = evaluation_cuts_for(cfg, sub, full_taxonomy=taxonomy)
    names = [[sub.names[i] for i in c] for c in projected]
    assert names == [["animal", "vehicle"], ["bird", "cat", "car"]]
    cfg.TRAINER.HYPTREE.EVAL.CUTS_FILE = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="CUTS_FILE"):
        evaluation_cuts_for(cfg, taxonomy)
    bad = tmp_path / "cuts.txt"
    bad.write_text("animal vehicle\n")
    cfg.TRAINER.HYPTREE.EVAL.CUTS_FILE = str(bad)
    with pytest.raises(ValueError, match="expected a .json"):
        evaluation_cuts_for(cfg, taxonomy)


def test_train_log_append_read_truncate(tmp_path):
    path = str(tmp_path / "sub" / "train_log.jsonl")
    log = TrainLog(path)
    for epoch in (1, 1, 2, 2, 3):
        log.append(epoch=epoch, iteration=0, loss=1.5, curv_inter=float("nan"))
    log.close()
    rows = TrainLog.read(path)
    assert [r["epoch"] for r in rows] == [1, 1, 2, 2, 3] and rows[0]["curv_inter"] is None
    with open(path, "a") as f:
        f.write('{"epoch": 3, "iter')  # torn by a crash
    assert len(TrainLog.read(path)) == 5
    assert TrainLog(path).truncate(2) == 1  # drops epoch 3 (and the torn line)
    log = TrainLog(path)
    log.append(epoch=3, iteration=9, loss=0.5)
    log.close()
    assert [r["epoch"] for r in TrainLog.read(path)] == [1, 1, 2, 2, 3]
    assert TrainLog.read(path)[-1]["iteration"] == 9
    assert TrainLog(str(tmp_path / "none.jsonl")).truncate(0) == 0


def test_format_metrics_table():
    text = format_metrics(
        {"LA": 50.0, "HCA": 40.0, "MTA": math.nan, "node_acc": 60.0, "depth_acc": [90.0, 50.0], "num_samples": 8}
    )
    assert "LA" in text and " 50.00" in text and "depth 2" in text and "n/a" in text
