"""``hyptree predict`` on a trained toy run: its paths reproduce the run's own results.json.

The run is trained through ``train.py`` (tiny random CLIP, ToyHier, as tests/test_trainers.py),
so the Dassl test is marked ``dassl``; the file-handling checks need no Dassl.
"""

import json
import os

import numpy as np
import pytest

from hyptree.run import predict as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_inputs_checkpoints_and_formats(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("b.png", "sub/a.JPG", "notes.txt"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    assert P.image_files([str(tmp_path / "imgs")]) == [str(tmp_path / "imgs" / n) for n in ("b.png", "sub/a.JPG")]
    with pytest.raises(FileNotFoundError, match="no such image or folder"):
        P.image_files([str(tmp_path / "missing.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        P.image_files([str(tmp_path / "empty")])
    run = tmp_path / "run"
    (run / "learnable").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        P.checkpoint_path(str(run))
    for e in (2, 10):
        (run / "learnable" / f"model.pth.tar-{e}").write_bytes(b"")
    assert P.checkpoint_path(str(run)).endswith("model.pth.tar-10")  # latest, not 9 < 10 as text
    assert P.checkpoint_path(str(run), 2).endswith("model.pth.tar-2")
    with pytest.raises(FileNotFoundError, match=r"epochs there: \[2, 10\]"):
        P.checkpoint_path(str(run), 3)
    (run / "learnable" / "model-best.pth.tar").write_bytes(b"")
    assert P.checkpoint_path(str(run)).endswith("model-best.pth.tar")
    with pytest.raises(FileNotFoundError, match="config.yaml not found"):
        P.load_run_config(str(run))
    assert P.main(["--model-dir", str(run), str(tmp_path / "imgs")]) == 2


def test_records_formats():
    import torch

    from hyptree.eval.decode import decision_records, decode
    from hyptree.tree import Taxonomy

    t = Taxonomy.from_paths(["A/a1", "A/a2", "B/C/c1", "B/C/c2", "B/b1", "e"])
    s = torch.zeros(1, t.num_nodes)
    s[0, [t.index("B"), t.index("C"), t.index("c2")]] = 3.0
    s[0, t.index("a1")] = 5.0  # flat picks a1, top-down goes B > C > c2
    rec = decision_records(t, decode(t, s, k=2))[0]
    assert rec["flat"]["leaf"] == "a1" and [p["node"] for p in rec["top_down"]["path"]] == ["B", "C", "c2"]
    assert not rec["agree"] and [k["leaf"] for k in rec["topk"]] == ["a1", "c2"]
    pB = np.exp(3) / (np.exp(3) + 2)  # B against A and e
    assert rec["top_down"]["path"][0]["score"] == pytest.approx(pB, rel=1e-6)
    assert rec["top_down"]["path_score"] == pytest.approx(np.prod([p["score"] for p in rec["top_down"]["path"]]))
    recs = [{"image": "x.png", **rec}]
    assert json.loads(P.format_records(recs, "json"))[0]["flat"]["leaf"] == "a1"
    csv_text = P.format_records(recs, "csv").splitlines()
    assert csv_text[0].startswith("image,flat_leaf,flat_path") and ",B/C/c2," in csv_text[1]
    assert "B (0.91) > C" in P.format_records(recs, "table")


@pytest.mark.dassl
def test_predict_reproduces_the_runs_metrics(tmp_path, capsys):
    pytest.importorskip("dassl")
    import torch
    from test_trainers import run as train_run

    from hyptree.data.common import read_coop_split
    from hyptree.model.loading import main as clip_main

    clip = str(tmp_path / "tiny_clip.pt")
    assert clip_main(["make-tiny", clip]) == 0
    env = {"data": str(tmp_path / "data"), "clip": clip}
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_run(env, "MaPLeHypTree", out)
    finally:
        torch.set_num_threads(threads)
    rec = json.loads((out / "results.json").read_text())
    assert (out / "config.yaml").is_file()
    predictor = P.HierarchicalPredictor.from_run(str(out), device="cpu")
    assert predictor.checkpoint.endswith(f"model.pth.tar-{rec['epoch']}")
    classes = set(predictor.taxonomy.class_names)
    toy = os.path.join(env["data"], "toy_hier")
    items = [i for i in read_coop_split(os.path.join(toy, "split_toy_hier.json"), os.path.join(toy, "images"))["test"]]
    items = [i for i in items if i.classname in classes]
    assert len(items) == rec["metrics"]["num_samples"]
    recs = predictor.predict([i.impath for i in items], topk=3, batch_size=7, progress=False)
    assert [r["image"] for r in recs] == [i.impath for i in items]
    m = rec["metrics"]
    n = len(items)
    la = 100.0 * sum(r["flat"]["leaf"] == i.classname for r, i in zip(recs, items)) / n
    td = 100.0 * sum(r["top_down"]["leaf"] == i.classname for r, i in zip(recs, items)) / n
    agree = 100.0 * sum(r["agree"] for r in recs) / n
    assert (la, td, agree) == (pytest.approx(m["LA"]), pytest.approx(m["TD_LA"]), pytest.approx(m["TD_agree"]))
    for r in recs:
        assert r["topk"][0]["leaf"] == r["flat"]["leaf"] and len(r["topk"]) == 3
        for part in (r["flat"], r["top_down"]):
            assert part["path"][-1]["node"] == part["leaf"] and all(0 < p["score"] <= 1 for p in part["path"])
    # the command line: same decisions, csv of a folder
    folder = os.path.dirname(items[0].impath)
    csv_file = tmp_path / "pred.csv"
    argv = ["--model-dir", str(out), folder, "--format", "csv", "--device", "cpu", "--topk", "2"]
    assert P.main([*argv, "--output", str(csv_file)]) == 0
    assert "model.pth.tar-" in capsys.readouterr().err
    lines = csv_file.read_text().strip().splitlines()
    by_image = {r["image"]: r for r in recs}
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == len(os.listdir(folder))
    assert all(row[0] in by_image for row in rows)
    for row in rows:
        assert row[1] == by_image[row[0]]["flat"]["leaf"] and row[4] == by_image[row[0]]["top_down"]["leaf"]
