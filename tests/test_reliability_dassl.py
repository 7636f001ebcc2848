"""Issue 13 inside real Dassl runs (ToyHier, tiny CLIP, CPU): warnings that Dassl's import
used to mute, torn checkpoints a killed run leaves, and a resume with changed options."""

import json
import logging
import os
import shutil

import pytest
import torch

pytestmark = pytest.mark.dassl
pytest.importorskip("dassl")

import test_trainers  # noqa: E402

env = test_trainers.env  # the module fixture (tiny CLIP, data root)
results, run = test_trainers.results, test_trainers.run

TRAINER = "CoOpHier"
OPTS = ("TRAINER.HYPTREE.PRESET", "protect")


def test_dropped_classes_are_warned_in_log_and_recorded(env, tmp_path):
    """A taxonomy file lacking 3 of the 18 toy classes: the run says so (console and
    log.txt) and results.json lists the 3 classes with the reason."""
    import dassl.engine  # noqa: F401  its import runs logging.disable(logging.WARNING)

    from hyptree.data.toy import toy_hierarchy_lines

    lines = toy_hierarchy_lines()
    tax = tmp_path / "partial.txt"
    tax.write_text("\n".join(lines[3:]) + "\n")
    missing = [line.rsplit("/", 1)[-1] for line in lines[:3]]
    logging.disable(logging.WARNING)  # as Dassl leaves it, whatever ran before in this process
    out = tmp_path / "run"
    run(
        env,
        TRAINER,
        out,
        subsample="all",
        opts=(*OPTS, "TRAINER.HYPTREE.TAXONOMY.FILE", str(tax), "OPTIM.MAX_EPOCH", "1"),
    )
    log = (out / "log.txt").read_text()
    assert "3 of 18 classes are not leaves of taxonomy file" in log
    assert all(name in log for name in missing)
    rec = results(out)
    assert rec["taxonomy"]["leaves"] == 15
    assert sorted(d["class"] for d in rec["dropped_classes"]) == sorted(missing)
    assert all(d["reason"] == f"not a leaf of taxonomy file {tax}" for d in rec["dropped_classes"])
    assert rec["num_shots"] == 2 and rec["num_shots_used"] == 2 and rec["train_per_class"] == [2, 2]


@pytest.fixture(scope="module")
def two_epochs(env):
    out = env["base"] / "rel_two_epochs"
    run(env, TRAINER, out, opts=OPTS)
    return out


def _copy_run(src, dst):
    os.makedirs(dst / "learnable")
    for name in ("model.pth.tar-1", "model.pth.tar-2"):
        shutil.copy(os.path.join(src, "learnable", name), dst / "learnable")
    return dst / "learnable"


@pytest.mark.parametrize("damage", ["torn", "empty", "empty_pointer", "no_pointer"])
def test_resume_skips_torn_checkpoints_and_empty_pointers(env, two_epochs, tmp_path, damage, capsys):
    """What a SIGKILL during the epoch-2 checkpoint can leave: tar-2 torn or 0 bytes (pointer
    still at tar-1 or gone), an empty pointer. Resume goes on from the newest intact one
    and ends with the weights of the uninterrupted run."""
    ck = _copy_run(two_epochs, tmp_path / "run")
    pointer = "model.pth.tar-2\n"
    if damage == "torn":
        data = (ck / "model.pth.tar-2").read_bytes()
        (ck / "model.pth.tar-2").write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        (ck / "model.pth.tar-2").write_bytes(b"")
        pointer = None
    elif damage == "empty_pointer":
        os.remove(ck / "model.pth.tar-2")
        pointer = ""
    else:
        os.remove(ck / "model.pth.tar-2")
        pointer = None
    if pointer is not None:
        (ck / "checkpoint").write_text(pointer)
    run(env, TRAINER, tmp_path / "run", opts=OPTS)
    printed = capsys.readouterr().out
    assert "model.pth.tar-1" in printed and "Previous epoch: 1" in printed
    if damage in ("torn", "empty"):
        assert "skipped" in printed and "model.pth.tar-2" in printed
    if damage == "empty_pointer":
        assert "checkpoint is empty" in printed
    if damage in ("empty", "no_pointer"):
        assert "checkpoint is missing" in printed
    a = torch.load(os.path.join(two_epochs, "learnable", "model.pth.tar-2"), map_location="cpu")["state_dict"]
    b = torch.load(ck / "model.pth.tar-2", map_location="cpu")["state_dict"]
    for key in a:
        if key != "_extra_state":
            assert torch.equal(a[key], b[key]), key
    assert (ck / "checkpoint").read_text() == "model.pth.tar-2\n"
    assert not [f for f in os.listdir(ck) if f.endswith(".tmp")]


def test_resume_refuses_changed_options(env, two_epochs, tmp_path):
    ck = _copy_run(two_epochs, tmp_path / "run")
    os.remove(ck / "model.pth.tar-2")
    (ck / "checkpoint").write_text("model.pth.tar-1\n")
    with pytest.raises(ValueError, match=r"refusing to resume with changed options[\s\S]*OPTIM\.LR: 0\.01 -> 0\.02"):
        run(env, TRAINER, tmp_path / "run", opts=(*OPTS, "OPTIM.LR", "0.02"))
    assert not (tmp_path / "run" / "results.json").exists()
    with open(os.path.join(two_epochs, "results.json")) as f:
        assert json.load(f)["dropped_classes"] == []
