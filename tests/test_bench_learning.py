"""bench/learning.py's core on a tiny schedule: real train.py runs, table and result line;
its zero-shot variant is plain CLIP zero-shot (checked against a direct computation)."""

import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

pytestmark = pytest.mark.dassl
pytest.importorskip("dassl")

from bench import learning  # noqa: E402
from hyptree.data import toy_world  # noqa: E402
from hyptree.model.loading import load_clip, tiny_clip  # noqa: E402
from hyptree.run import toyclip  # noqa: E402


def test_benchmark_core_runs_and_zero_shot_is_plain_clip(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script's default; a shared machine's 2nd thread stalls
    try:
        _core(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _core(tmp_path):
    weights = str(tmp_path / "tiny.pt")
    torch.save(tiny_clip(embed_dim=64, transformer_width=64, transformer_heads=1).state_dict(), weights)
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    opts = ["TRAINER.HYPTREE.CLIP_PATH", weights, "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1"]
    table = learning.run_benchmark(["fs4"], ["zero-shot"], [1], data, out, opts, progress=False)
    table.update(learning.run_benchmark(["b2n"], ["hyptree"], [1], data, out, opts, progress=False))
    assert list(table) == [("fs4", "all", "zero-shot"), ("b2n", "base", "hyptree"), ("b2n", "novel", "hyptree")]
    d = toy_world.make_world_dataset(data, progress=False)
    direct = toyclip.zero_shot_accuracy(load_clip(weights), d.test, d.classnames)
    assert table[("fs4", "all", "zero-shot")]["LA"] == [pytest.approx(direct, abs=1e-6)]
    # the novel evaluation loaded the checkpoint trained on the base classes
    with open(os.path.join(out, "b2n", "hyptree", "seed1", "novel", "results.json")) as f:
        novel = json.load(f)
    assert novel["model_dir"].endswith(os.path.join("b2n", "hyptree", "seed1", "train")) and novel["epoch"] == 1
    for cell in table.values():
        assert all(0 <= v[0] <= 100 for v in cell.values())
    text = learning.format_table(table)
    assert "| b2n | novel | hyptree | 1 |" in text and len(text.splitlines()) == 5
    line = learning.result_line(table)
    assert line.startswith("result: ") and "LA_fs4_all_zeroshot=" in line
