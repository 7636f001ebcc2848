"""Protocol scripts run with a fake python (records train.py's argv, writes results.json),
install_into_maple.sh on a generated MaPLe-like checkout, and the helpers behind them."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from hyptree.run import maple_patch as MP
from hyptree.run import protocols as P
from hyptree.run.config import check_config, default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts", "hyptree")
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash not found")

# Fake interpreter: `train.py ...` is recorded and answered with a results.json in
# --output-dir (metrics from seed and split, so the tables can be checked); anything else
# (-m hyptree results, -c ...) goes to the real python.
FAKE_PYTHON = r"""#!{python}
import json, os, sys
argv = sys.argv[1:]
if not argv or os.path.basename(argv[0]) != "train.py":
    if argv[:1] == ["-c"] and "import hyptree" in argv[1] and os.environ.get("FAKE_NO_HYPTREE"):
        sys.exit(1)
    os.execv({python!r}, [{python!r}] + argv)
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(argv) + "\n")
flags, opts, i = {{}}, [], 1
while i < len(argv):
    if argv[i] in ("--eval-only", "--no-train"):
        flags[argv[i]] = True; i += 1
    elif argv[i].startswith("--"):
        flags[argv[i]] = argv[i + 1]; i += 2
    else:
        opts = argv[i:]; break
cfg = dict(zip(opts[::2], opts[1::2]))
out = flags["--output-dir"]
os.makedirs(out, exist_ok=True)
crash = os.environ.get("FAKE_CRASH")
if crash and crash in out and "--resume" not in flags and "--eval-only" not in flags:
    open(os.path.join(out, "checkpoint"), "w").close()
    sys.exit(3)
if os.environ.get("FAKE_ENV_LOG"):  # which GPU, and when (the local launcher's pool)
    import time
    t0 = time.time()
    time.sleep(float(os.environ.get("FAKE_DELAY", "0")))
    with open(os.environ["FAKE_ENV_LOG"], "a") as f:
        f.write(json.dumps({{"out": out, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "t0": t0, "t1": time.time()}}) + "\n")
sleep = os.environ.get("FAKE_SLEEP")  # killed while training: a checkpoint, then wait to be stopped
if sleep and sleep in out and "--resume" not in flags and "--eval-only" not in flags:
    import time
    open(os.path.join(out, "checkpoint"), "w").close()
    time.sleep(120)
    sys.exit(4)
import yaml
with open(flags["--dataset-config-file"]) as f:
    dataset = yaml.safe_load(f)["DATASET"]["NAME"]
seed = int(flags["--seed"])
sub = cfg.get("DATASET.SUBSAMPLE_CLASSES", "all")
bonus = {{"base": 20.0, "new": 0.0}}.get(sub, 10.0)
rec = {{"metrics": {{"LA": 50.0 + bonus + seed, "HCA": 30.0 + bonus + seed, "MTA": 40.0 + bonus,
                    "node_acc": 60.0, "depth_acc": [70.0, 60.0], "num_samples": 10}},
       "split": "test", "tree": sub if sub != "all" else "all", "dataset": dataset,
       "num_shots": int(cfg.get("DATASET.NUM_SHOTS", -1)), "subsample": sub, "trainer": flags["--trainer"],
       "backbone": "maple", "preset": cfg.get("TRAINER.HYPTREE.PRESET"), "seed": seed,
       "model_dir": flags.get("--model-dir"), "output_dir": out, "epoch": None, "time": "2026-01-01"}}
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(rec, f)
print("fake train.py wrote", out)
"""

DATASETS = {
    "cifar100": "CIFAR100Hier",
    "toy": "ToyWorld",
    "imagenet": "ImageNetHier",
    "imagenetv2": "ImageNetV2Hier",
    "imagenet_sketch": "ImageNetSketchHier",
    "imagenet_a": "ImageNetAHier",
    "imagenet_r": "ImageNetRHier",
}


@pytest.fixture
def work(tmp_path):
    """A repository-like working folder: train.py, configs, and the fake python."""
    return make_work(tmp_path)


def make_work(tmp_path):
    w = tmp_path / "repo"
    (w / "configs" / "datasets").mkdir(parents=True)
    (w / "train.py").write_text("raise SystemExit('the fake python never runs this')\n")
    for name, cls in DATASETS.items():
        (w / "configs" / "datasets" / f"{name}.yaml").write_text(f'DATASET:\n  NAME: "{cls}"\n')
    for trainer in ("MaPLeHypTree", "CoOpHier"):
        d = w / "configs" / "trainers" / trainer
        d.mkdir(parents=True)
        for cfg in ("vanilla", "protect", "hyptree", "tiny_cpu"):
            (d / f"{cfg}.yaml").write_text(f"OPTIM:\n  MAX_EPOCH: 5\nTRAINER:\n  HYPTREE:\n    PRESET: {cfg}\n")
        (d / "sched.yaml").write_text("OPTIM:\n  MAX_EPOCH: 200\n  LR: 0.01\n")
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    return w


def run_script(work, script, *args, **env):
    log = work.parent / "calls.jsonl"
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "TRAINER",
            "PRESET",
            "CFG",
            "DATA",
            "SHOTS",
            "OUT",
            "EXTRA_OPTS",
            "LOAD_EPOCH",
            "RUN_NAME",
            "DATASET_CONFIGS",
            "TRAINER_CONFIGS",
            "TRAIN_PY",
            "VARIANTS",
            "SOURCE",
            "TARGETS",
            "FORCE",
        )
    }
    full_env.update(PYTHON=str(work.parent / "fakepython"), FAKE_LOG=str(log), PYTHONPATH=ROOT)
    full_env.update(env)
    before = log.read_text().splitlines() if log.exists() else []
    proc = subprocess.run(
        [BASH, os.path.join(SCRIPTS, script), *args],
        cwd=work,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = log.read_text().splitlines() if log.exists() else []
    calls = [json.loads(line) for line in after[len(before) :]]
    return proc, calls


def parse_call(argv):
    """(flags, opts) of a recorded train.py command line."""
    assert argv[0] == "train.py"
    flags, i = {}, 1
    while i < len(argv) and argv[i].startswith("--"):
        if argv[i] in ("--eval-only", "--no-train"):
            flags[argv[i]] = True
            i += 1
        else:
            flags[argv[i]] = argv[i + 1]
            i += 2
    return flags, argv[i:]


def opts_dict(opts):
    assert len(opts) % 2 == 0, opts
    return dict(zip(opts[::2], opts[1::2]))


# --------------------------------------------------------------------------- base-to-novel


@needs_bash
def test_base2novel_commands_layout_and_table(work):
    proc, calls = run_script(work, "base2novel.sh", "cifar100", "1", "2")
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 4
    common = "cifar100/shots_16/MaPLeHypTree/hyptree"
    for k, seed in enumerate((1, 2)):
        tflags, topts = parse_call(calls[2 * k])
        train_dir = f"output/base2new/train_base/{common}/seed{seed}"
        assert tflags == {
            "--root": "./data",
            "--seed": str(seed),
            "--trainer": "MaPLeHypTree",
            "--dataset-config-file": "configs/datasets/cifar100.yaml",
            "--config-file": "configs/trainers/MaPLeHypTree/hyptree.yaml",
            "--output-dir": train_dir,
        }
        assert opts_dict(topts) == {
            "DATASET.NUM_SHOTS": "16",
            "DATASET.SUBSAMPLE_CLASSES": "base",
            "TRAINER.HYPTREE.PRESET": "hyptree",
        }
        eflags, eopts = parse_call(calls[2 * k + 1])
        assert eflags["--output-dir"] == f"output/base2new/test_new/{common}/seed{seed}"
        assert eflags["--model-dir"] == train_dir
        assert eflags["--load-epoch"] == "5"  # OPTIM.MAX_EPOCH of the config
        assert eflags["--eval-only"] is True and "--resume" not in eflags
        assert opts_dict(eopts)["DATASET.SUBSAMPLE_CLASSES"] == "new"
    # the table: base LA = 70 + seed, novel LA = 50 + seed
    assert "### Base-to-novel — LA" in proc.stdout
    h = 2 * 71.5 * 51.5 / (71.5 + 51.5)
    assert (
        f"| CIFAR100Hier | 16 | MaPLeHypTree | hyptree | 2 | 71.50 ± 0.50 | 51.50 ± 0.50 | {h:.2f} |  |" in proc.stdout
    )
    # second run: everything finished, nothing is run again
    proc, calls = run_script(work, "base2novel.sh", "cifar100", "1", "2")
    assert proc.returncode == 0 and calls == []
    assert proc.stdout.count("[skip]") == 4


@needs_bash
def test_base2novel_resumes_unfinished_training(work):
    proc, calls = run_script(work, "base2novel.sh", "cifar100", "1", "2", "3", FAKE_CRASH="seed2")
    assert proc.returncode != 0  # the crash stops the script (set -e)
    assert [parse_call(c)[0]["--output-dir"].split("/")[2] for c in calls] == ["train_base", "test_new", "train_base"]
    proc, calls = run_script(work, "base2novel.sh", "cifar100", "1", "2", "3")
    assert proc.returncode == 0, proc.stderr
    flags = [parse_call(c)[0] for c in calls]
    seed2 = "output/base2new/train_base/cifar100/shots_16/MaPLeHypTree/hyptree/seed2"
    assert flags[0]["--output-dir"] == seed2 and flags[0]["--resume"] == seed2
    assert "[resume]" in proc.stdout
    assert [f["--seed"] for f in flags] == ["2", "2", "3", "3"]  # seed 1 skipped
    assert "--resume" not in flags[2]
    assert "| 3 | 72.00 ± 0.82 | 52.00 ± 0.82 |" in proc.stdout


@needs_bash
def test_missing_novel_seed_is_flagged_in_printed_table(work):
    proc, _ = run_script(work, "base2novel.sh", "cifar100", "1", "2")
    assert proc.returncode == 0
    shutil.rmtree(work / "output/base2new/test_new/cifar100/shots_16/MaPLeHypTree/hyptree/seed2")
    proc = subprocess.run(
        [sys.executable, "-m", "hyptree", "results", str(work / "output" / "base2new"), "--seeds", "1", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| 1 | 71.00 ± 0.00 | 51.00 ± 0.00 |" in proc.stdout  # seed 2's base is not averaged in
    assert "seed 2 dropped: novel missing" in proc.stdout


@needs_bash
def test_env_overrides_extra_opts_and_load_epoch(work):
    env = dict(
        TRAINER="CoOpHier",
        PRESET="protect",
        CFG="sched",
        DATA="/datasets",
        SHOTS="4",
        OUT="res",
        EXTRA_OPTS='OPTIM.MAX_EPOCH 2 TRAINER.MAPLE.CTX_INIT "a photo of a"',
        TEST_BASE="1",
    )
    proc, calls = run_script(work, "base2novel.sh", "cifar100", "7", "--", "OPTIM.LR", "0.5", **env)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 3  # train, test_base, test_new
    tflags, topts = parse_call(calls[0])
    assert tflags["--root"] == "/datasets" and tflags["--trainer"] == "CoOpHier"
    assert tflags["--config-file"] == "configs/trainers/CoOpHier/sched.yaml"
    assert tflags["--output-dir"] == "res/base2new/train_base/cifar100/shots_4/CoOpHier/sched_protect/seed7"
    # protocol options, then the preset, then EXTRA_OPTS (quoted value kept whole), then "--" options
    assert topts == [
        "DATASET.NUM_SHOTS",
        "4",
        "DATASET.SUBSAMPLE_CLASSES",
        "base",
        "TRAINER.HYPTREE.PRESET",
        "protect",
        "OPTIM.MAX_EPOCH",
        "2",
        "TRAINER.MAPLE.CTX_INIT",
        "a photo of a",
        "OPTIM.LR",
        "0.5",
    ]
    bflags, bopts = parse_call(calls[1])
    assert (
        bflags["--output-dir"].startswith("res/base2new/test_base/")
        and opts_dict(bopts)["DATASET.SUBSAMPLE_CLASSES"] == "base"
    )
    assert bflags["--load-epoch"] == "2"  # EXTRA_OPTS override the config's 200
    assert opts_dict(bopts)["TRAINER.MAPLE.CTX_INIT"] == "a photo of a"
    proc, calls = run_script(work, "base2novel.sh", "cifar100", "8", LOAD_EPOCH="9", CFG="sched")
    assert parse_call(calls[1])[0]["--load-epoch"] == "9"
    proc, calls = run_script(work, "base2novel.sh", "cifar100", "9", CFG="sched")
    assert parse_call(calls[1])[0]["--load-epoch"] == "200"


@needs_bash
def test_installed_dataset_config_folder_is_preferred(work):
    (work / "configs" / "datasets" / "hyptree").mkdir()
    (work / "configs" / "datasets" / "hyptree" / "cifar100.yaml").write_text("DATASET:\n  NAME: CIFAR100Hier\n")
    proc, calls = run_script(work, "fewshot.sh", "cifar100", "1", "1")
    assert proc.returncode == 0, proc.stderr
    assert parse_call(calls[0])[0]["--dataset-config-file"] == "configs/datasets/hyptree/cifar100.yaml"


@needs_bash
@pytest.mark.parametrize(
    "args,env,message",
    [
        (("nope",), {}, "dataset config configs/datasets/nope.yaml not found; available: cifar100"),
        (("cifar100",), {"CFG": "missing"}, "trainer config configs/trainers/MaPLeHypTree/missing.yaml not found"),
        (("cifar100",), {"TRAINER": "MaPLeHyptree"}, "TRAINER=MaPLeHyptree has no config folder"),
        (("cifar100",), {"TRAINER": "MaPLeHyptree"}, "available trainers: CoOpHier MaPLeHypTree"),
        (
            ("cifar100",),
            {"PRESET": "hyptre"},
            "PRESET=hyptre (TRAINER.HYPTREE.PRESET) is not a preset; choices: vanilla protect hyptree",
        ),
        (("cifar100", "x1"), {}, "seed must be a non-negative integer"),
        (("cifar100",), {"TRAIN_PY": "nothere.py"}, "run the script from the repository root"),
        ((), {}, "usage:"),
    ],
)
def test_script_errors_are_clear(work, args, env, message):
    proc, calls = run_script(work, "base2novel.sh", *args, **env)
    assert proc.returncode != 0 and calls == []
    assert message in proc.stderr


# --------------------------------------------------------------------------- few-shot, cross-domain, ablation


@needs_bash
def test_fewshot_layout_and_table(work):
    proc, calls = run_script(work, "fewshot.sh", "toy", "4", "1", "2", "3", PRESET="vanilla")
    assert proc.returncode == 0, proc.stderr
    dirs = [parse_call(c)[0]["--output-dir"] for c in calls]
    assert dirs == [f"output/fewshot/toy/shots_4/MaPLeHypTree/tiny_cpu_vanilla/seed{s}" for s in (1, 2, 3)]
    assert opts_dict(parse_call(calls[0])[1]) == {"DATASET.NUM_SHOTS": "4", "TRAINER.HYPTREE.PRESET": "vanilla"}
    assert parse_call(calls[0])[0]["--config-file"] == "configs/trainers/MaPLeHypTree/tiny_cpu.yaml"  # toy default
    assert "### Few-shot" in proc.stdout
    assert (
        "| ToyWorld | 4 | MaPLeHypTree | tiny_cpu_vanilla | 3 | 62.00 ± 0.82 | 42.00 ± 0.82 | 50.00 ± 0.00 | 60.00 ± 0.00 |"
        in proc.stdout
    )


@needs_bash
def test_crossdomain_trains_once_and_evaluates_every_target(work):
    proc, calls = run_script(work, "crossdomain.sh", "1")
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 5
    tflags, topts = parse_call(calls[0])
    train_dir = "output/crossdomain/train/imagenet/shots_16/MaPLeHypTree/hyptree/seed1"
    assert tflags["--output-dir"] == train_dir and opts_dict(topts)["DATASET.NUM_SHOTS"] == "16"
    targets = ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    for call, target in zip(calls[1:], targets):
        flags, opts = parse_call(call)
        assert flags["--dataset-config-file"] == f"configs/datasets/{target}.yaml"
        assert flags["--output-dir"] == f"output/crossdomain/test/{target}/shots_16/MaPLeHypTree/hyptree/seed1"
        assert flags["--model-dir"] == train_dir and flags["--load-epoch"] == "5" and flags["--eval-only"]
        assert "DATASET.NUM_SHOTS" not in opts
    assert "### Cross-domain — LA" in proc.stdout
    assert "| ImageNetV2Hier | ImageNetSketchHier | ImageNetAHier | ImageNetRHier |" in proc.stdout
    proc, calls = run_script(work, "crossdomain.sh", "1", TARGETS="toy", SOURCE="cifar100", SHOTS="2")
    assert [parse_call(c)[0]["--dataset-config-file"] for c in calls] == [
        "configs/datasets/cifar100.yaml",
        "configs/datasets/toy.yaml",
    ]


@needs_bash
def test_ablation_variants_each_in_own_folder(work):
    proc, calls = run_script(work, "ablation.sh", "toy", "1", VARIANTS="full euclidean no_pass_through", SHOTS="2")
    assert proc.returncode == 0, proc.stderr
    got = {parse_call(c)[0]["--output-dir"].split("/")[-2]: opts_dict(parse_call(c)[1]) for c in calls}
    assert set(got) == {"full", "euclidean", "no_pass_through"}
    assert got["euclidean"]["TRAINER.HYPTREE.CURVATURE.MODE"] == "euclidean"
    assert got["no_pass_through"]["TRAINER.HYPTREE.PASS_THROUGH"] == "False"
    assert "TRAINER.HYPTREE.CURVATURE.MODE" not in got["full"]
    assert all(o["DATASET.NUM_SHOTS"] == "2" for o in got.values())
    assert (
        parse_call(calls[0])[0]["--output-dir"]
        == "output/ablation/toy/shots_2/MaPLeHypTree/tiny_cpu_hyptree/full/seed1"
    )
    assert "### Ablations" in proc.stdout and "tiny_cpu_hyptree/euclidean" in proc.stdout
    proc, calls = run_script(work, "ablation.sh", "toy", VARIANTS="bogus")
    assert proc.returncode != 0 and "unknown ablation variant(s) bogus" in proc.stderr
    proc, calls = run_script(work, "ablation.sh", "toy", PRESET="protect")
    assert proc.returncode != 0 and "ablations modify the hyptree preset" in proc.stderr


# --------------------------------------------------------------------------- protocol helpers


def test_ablation_options_are_valid_config():
    names = [n for n, _ in P.ablation_variants()]
    assert names[0] == "full" and {
        "euclidean",
        "shared",
        "separate",
        "no_image_tree",
        "no_pass_through",
        "cross_angle",
        "cross_mmd",
    } <= set(names)
    seen = set()
    for name, opts in P.ablation_variants():
        cfg = default_config()
        cfg.merge_from_list(opts)  # every key exists and every value has the right type
        check_config(cfg)
        dump = cfg.dump()
        assert dump not in seen, name  # every variant changes something different
        seen.add(dump)


def test_max_epoch_resolution(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("OPTIM:\n  MAX_EPOCH: 3\n")
    b.write_text("OPTIM:\n  LR: 0.1\n")
    assert P.max_epoch([str(b)]) == P.DASSL_DEFAULT_MAX_EPOCH
    assert P.max_epoch([str(a), str(b)]) == 3
    assert P.max_epoch([str(a)], ["OPTIM.LR", "1", "OPTIM.MAX_EPOCH", "8"]) == 8
    with pytest.raises(ValueError, match="not an integer"):
        P.max_epoch([str(a)], ["OPTIM.MAX_EPOCH", "many"])
    with pytest.raises(ValueError, match="odd number"):
        P.max_epoch([], ["OPTIM.MAX_EPOCH"])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        P.max_epoch([str(tmp_path / "none.yaml")])
    assert P.main(["max-epoch", str(a), "--", "OPTIM.MAX_EPOCH", "4"]) == 0


def test_is_done(tmp_path):
    assert not P.is_done(str(tmp_path))
    (tmp_path / "results.json").write_text('{"metrics": {}, "split": "val"}')
    assert not P.is_done(str(tmp_path))
    (tmp_path / "results.json").write_text('{"metrics": {')
    assert not P.is_done(str(tmp_path))
    (tmp_path / "results.json").write_text('{"metrics": {"LA": 1}, "split": "test"}')
    assert P.is_done(str(tmp_path))
    assert P.main(["done", str(tmp_path)]) == 0


# --------------------------------------------------------------------------- train.py patch

MAPLE_TRAIN = """\
import argparse

from dassl.config import get_cfg_default
from dassl.engine import build_trainer

# custom
import datasets.sun397

import trainers.maple


def extend_cfg(cfg):
    from yacs.config import CfgNode as CN

    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 3
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"


def setup_cfg(args):
    cfg = get_cfg_default()
    extend_cfg(cfg)

    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    print(parser)
"""


def test_patch_train_py_inserts_once():
    out = MP.patch_train_py(MAPLE_TRAIN, ["maple_hyptree", "coop_hier"], ["cifar100_hier"])
    assert MP.patch_train_py(out, ["maple_hyptree", "coop_hier"], ["cifar100_hier"]) == out
    lines = out.splitlines()
    begin = lines.index(MP.BEGIN)
    assert lines[begin - 2] == "import trainers.maple"  # after the checkout's own plugin imports
    assert lines[begin + 1 : lines.index(MP.END)] == [
        "import hyptree.run.config  # noqa: F401",
        "import datasets.cifar100_hier  # noqa: F401",
        "import trainers.coop_hier  # noqa: F401",
        "import trainers.maple_hyptree  # noqa: F401",
    ]
    call = lines.index("    extend_cfg(cfg)")
    assert lines[call + 1] == f"    hyptree.run.config.add_hyptree_config(cfg)  {MP.CALL_MARK}"
    assert out.count("add_hyptree_config") == 1
    compile(out, "train.py", "exec")


def test_patch_train_py_updates_block_keeps_crlf_and_argument_name():
    text = MAPLE_TRAIN.replace("extend_cfg(cfg)\n\n    if", "extend_cfg(config)\n\n    if").replace("\n", "\r\n")
    once = MP.patch_train_py(text, ["a"], [])
    assert "\r\n" in once and "\n" not in once.replace("\r\n", "")
    assert "hyptree.run.config.add_hyptree_config(config)" in once
    twice = MP.patch_train_py(once, ["a", "b"], ["d"])
    assert "import trainers.b  # noqa: F401" in twice and "import datasets.d  # noqa: F401" in twice
    assert twice.count(MP.BEGIN) == 1 and twice.count("add_hyptree_config(") == 1


def test_patch_train_py_errors():
    with pytest.raises(MP.InstallError, match="no extend_cfg"):
        MP.patch_train_py("import os\n\ndef setup_cfg(a):\n    return a\n")
    with pytest.raises(MP.InstallError, match="does not parse"):
        MP.patch_train_py("def (:\n")
    with pytest.raises(MP.InstallError, match="end marker"):
        MP.patch_train_py(MP.BEGIN + "\nimport x\n")
    with pytest.raises(ValueError, match="not a module name"):
        MP.patch_train_py(MAPLE_TRAIN, ["bad-name"])


def test_registered_names():
    text = (
        "@TRAINER_REGISTRY.register()\nclass MaPLeHypTree(TrainerX):\n    pass\n"
        "@DATASET_REGISTRY.register()\n\nclass ToyHier(DatasetBase):\n    pass\n"
    )
    assert MP.registered_names(text) == {"MaPLeHypTree", "ToyHier"}


# --------------------------------------------------------------------------- install_into_maple.sh

DASSL_STUB = {
    "dassl/__init__.py": "",
    "dassl/config.py": textwrap.dedent("""\
        from yacs.config import CfgNode as CN

        def get_cfg_default():
            cfg = CN()
            cfg.TRAINER = CN()
            cfg.TRAINER.NAME = ""
            cfg.DATASET = CN()
            cfg.DATASET.NAME = ""
            cfg.OPTIM = CN()
            cfg.OPTIM.MAX_EPOCH = 10
            return cfg
        """),
    # what hyptree.run.dassl_compat patches (the patched train.py applies it first)
    "dassl/optim/__init__.py": "",
    "dassl/optim/lr_scheduler.py": "class _BaseWarmupScheduler:\n    pass\n",
    "dassl/utils/__init__.py": "from .torchtools import load_checkpoint\n",
    "dassl/utils/torchtools.py": "def load_checkpoint(fpath):\n    raise NotImplementedError\n",
    "dassl/engine/trainer.py": "from dassl.utils import load_checkpoint\n",
    "dassl/data/__init__.py": "",
    "dassl/data/transforms/__init__.py": "",
    "dassl/data/transforms/autoaugment.py": "import numpy as np\n",
    "dassl/data/transforms/randaugment.py": "import numpy as np\n",
    "dassl/engine/__init__.py": textwrap.dedent("""\
        class Registry:
            def __init__(self):
                self.names = {}
            def register(self):
                def deco(cls):
                    if cls.__name__ in self.names:
                        raise KeyError(cls.__name__)
                    self.names[cls.__name__] = cls
                    return cls
                return deco
        TRAINER_REGISTRY = Registry()
        DATASET_REGISTRY = Registry()
        def build_trainer(cfg):
            return TRAINER_REGISTRY.names[cfg.TRAINER.NAME]
        """),
}


def _trainer_py(name):
    return f"from dassl.engine import TRAINER_REGISTRY\n\n\n@TRAINER_REGISTRY.register()\nclass {name}:\n    pass\n"


def _dataset_py(name):
    return f"from dassl.engine import DATASET_REGISTRY\n\n\n@DATASET_REGISTRY.register()\nclass {name}:\n    pass\n"


def _write(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def checkouts(tmp_path):
    """(ours, maple, stubs): a HypTree-like repository, a MaPLe-like checkout, a Dassl stub."""
    ours, maple, stubs = tmp_path / "hyptree_repo", tmp_path / "maple", tmp_path / "stubs"
    _write(
        ours,
        {
            "hyptree/__init__.py": "",
            "trainers/__init__.py": "# ours\n",
            "trainers/maple_hyptree.py": _trainer_py("MaPLeHypTree"),
            "trainers/coop_hier.py": _trainer_py("CoOpHier"),
            "datasets/__init__.py": "# ours\n",
            "datasets/sun397_hier.py": _dataset_py("SUN397Hier"),
            "configs/trainers/MaPLeHypTree/hyptree.yaml": "TRAINER:\n  HYPTREE:\n    PRESET: hyptree\n",
            "configs/trainers/CoOpHier/vanilla.yaml": "TRAINER:\n  HYPTREE:\n    PRESET: vanilla\n",
            "configs/trainers/Other/x.yaml": "not ours to install\n",
            "configs/datasets/sun397.yaml": "DATASET:\n  NAME: SUN397Hier\n",
        },
    )
    for sh in os.listdir(SCRIPTS):
        _write(ours, {f"scripts/hyptree/{sh}": open(os.path.join(SCRIPTS, sh)).read()})
    _write(
        maple,
        {
            "train.py": MAPLE_TRAIN,
            "trainers/__init__.py": "",
            "trainers/maple.py": _trainer_py("MaPLe"),
            "datasets/__init__.py": "",
            "datasets/sun397.py": _dataset_py("SUN397"),
            "configs/datasets/sun397.yaml": "DATASET:\n  NAME: SUN397\n",
            "configs/trainers/MaPLe/vit_b16.yaml": "OPTIM:\n  MAX_EPOCH: 5\n",
        },
    )
    _write(stubs, DASSL_STUB)
    return ours, maple, stubs


def run_install(ours, maple, *flags, python=None, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("FORCE", "DRY_RUN")}
    full_env.update(HYPTREE_REPO=str(ours), PYTHONPATH=ROOT, PYTHON=python or sys.executable)
    full_env.update(env)
    return subprocess.run(
        [BASH, os.path.join(SCRIPTS, "install_into_maple.sh"), *flags, str(maple)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_bash
def test_install_into_maple_copies_patches_and_is_idempotent(checkouts):
    ours, maple, stubs = checkouts
    proc = run_install(ours, maple)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "hyptree is importable" in proc.stdout
    for rel in (
        "trainers/maple_hyptree.py",
        "trainers/coop_hier.py",
        "datasets/sun397_hier.py",
        "configs/trainers/MaPLeHypTree/hyptree.yaml",
        "configs/trainers/CoOpHier/vanilla.yaml",
        "configs/datasets/hyptree/sun397.yaml",
        "scripts/hyptree/base2novel.sh",
        "scripts/hyptree/common.sh",
    ):
        assert (maple / rel).read_bytes() == (ours / rel.replace("datasets/hyptree/", "datasets/")).read_bytes(), rel
    assert (maple / "trainers/__init__.py").read_text() == ""  # ours not copied
    assert (maple / "configs/datasets/sun397.yaml").read_text() == "DATASET:\n  NAME: SUN397\n"  # MaPLe's kept
    assert not (maple / "configs/trainers/Other").exists()
    patched = (maple / "train.py").read_text()
    assert patched == MP.patch_train_py(MAPLE_TRAIN, ["coop_hier", "maple_hyptree"], ["sun397_hier"])

    before = _snapshot(maple)
    proc = run_install(ours, maple)
    assert proc.returncode == 0, proc.stderr
    assert "train.py already patched" in proc.stdout and "copy " not in proc.stdout
    assert _snapshot(maple) == before

    # the patched train.py runs: our trainers register, add_hyptree_config fills the defaults
    check = textwrap.dedent("""\
        import argparse, train
        from dassl.engine import TRAINER_REGISTRY, DATASET_REGISTRY
        args = argparse.Namespace(dataset_config_file="configs/datasets/hyptree/sun397.yaml",
                                  config_file="configs/trainers/MaPLeHypTree/hyptree.yaml",
                                  opts=["TRAINER.HYPTREE.CURVATURE.MODE", "shared"])
        cfg = train.setup_cfg(args)
        print(sorted(TRAINER_REGISTRY.names), sorted(DATASET_REGISTRY.names))
        print(cfg.DATASET.NAME, cfg.TRAINER.HYPTREE.PRESET, cfg.TRAINER.HYPTREE.CURVATURE.MODE,
              cfg.TRAINER.MAPLE.N_CTX, cfg.TRAINER.HYPTREE.LAYERS)
        import dassl.engine.trainer, dassl.optim.lr_scheduler as ls
        print(ls._BaseWarmupScheduler.__init__.__module__, dassl.engine.trainer.load_checkpoint.__module__)
        """)
    proc = subprocess.run(
        [sys.executable, "-c", check],
        cwd=maple,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{stubs}:{ROOT}"},
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "['CoOpHier', 'MaPLe', 'MaPLeHypTree'] ['SUN397', 'SUN397Hier']",
        "SUN397Hier hyptree shared 3 [4, 7, 11]",  # MaPLe's own N_CTX (3 here) kept, ours added
        "hyptree.run.dassl_compat hyptree.run.dassl_compat",  # their trainers get the compat layer
    ]


@needs_bash
def test_install_refuses_to_overwrite_a_different_file(checkouts):
    ours, maple, _ = checkouts
    (maple / "trainers" / "coop_hier.py").write_text("# someone else's coop_hier\n")
    proc = run_install(ours, maple)
    assert proc.returncode != 0
    assert "exist in" in proc.stderr and "trainers/coop_hier.py" in proc.stderr and "FORCE=1" in proc.stderr
    assert (maple / "train.py").read_text() == MAPLE_TRAIN  # nothing changed
    assert not (maple / "trainers" / "maple_hyptree.py").exists()
    proc = run_install(ours, maple, FORCE="1")
    assert proc.returncode == 0, proc.stderr
    assert (maple / "trainers" / "coop_hier.py").read_text() == _trainer_py("CoOpHier")


@needs_bash
def test_install_refuses_a_registry_clash(checkouts):
    ours, maple, _ = checkouts
    (maple / "datasets" / "other.py").write_text(_dataset_py("SUN397Hier"))
    proc = run_install(ours, maple)
    assert proc.returncode != 0 and "already registers 'SUN397Hier'" in proc.stderr
    assert (maple / "train.py").read_text() == MAPLE_TRAIN


@needs_bash
def test_install_dry_run_and_bad_target(checkouts, tmp_path):
    ours, maple, _ = checkouts
    proc = run_install(ours, maple, DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    assert "would copy trainers/maple_hyptree.py" in proc.stdout and "would patch train.py" in proc.stdout
    assert (maple / "train.py").read_text() == MAPLE_TRAIN and not (maple / "trainers/maple_hyptree.py").exists()
    proc = run_install(ours, tmp_path)
    assert proc.returncode != 0 and "no train.py here" in proc.stderr


@needs_bash
def test_install_says_when_hyptree_is_not_importable(checkouts, work):
    ours, maple, _ = checkouts
    before = _snapshot(maple)
    proc = run_install(ours, maple, python=str(work.parent / "fakepython"), FAKE_NO_HYPTREE="1")
    assert proc.returncode != 0
    assert "'import hyptree' fails" in proc.stderr and f"pip install -e {ours}" in proc.stderr
    assert "nothing was changed" in proc.stderr and _snapshot(maple) == before  # checked before touching anything


@needs_bash
def test_uninstall_restores_the_checkout_exactly(checkouts):
    ours, maple, _ = checkouts
    (maple / "trainers" / "coop_hier.py").write_text("# their coop_hier\n")
    (maple / "train.py").chmod(0o755)
    before = _snapshot(maple)
    modes = {p: p.stat().st_mode for p in maple.rglob("*")}
    proc = run_install(ours, maple, FORCE="1")
    assert proc.returncode == 0, proc.stderr
    assert (maple / ".hyptree" / "source").read_text() == f"{ours}\n"
    assert (maple / "trainers" / "coop_hier.py").read_text() == _trainer_py("CoOpHier")
    (maple / "trainers" / "__pycache__").mkdir()
    (maple / "trainers" / "__pycache__" / "maple_hyptree.cpython-311.pyc").write_bytes(b"x")
    (maple / "trainers" / "maple_hyptree.py").write_text("# edited after the install\n")
    proc = run_install(ours, maple, "--uninstall")
    assert proc.returncode != 0 and "changed since the install" in proc.stderr and "maple_hyptree.py" in proc.stderr
    proc = run_install(ours, maple, "--uninstall", FORCE="1")
    assert proc.returncode == 0, proc.stderr
    (maple / "trainers" / "__pycache__").rmdir()  # only our byte code was removed: the folder is empty
    assert _snapshot(maple) == before
    assert {p: p.stat().st_mode for p in maple.rglob("*")} == modes  # no folder left over, modes kept
    proc = run_install(ours, maple, "--uninstall")
    assert proc.returncode != 0 and "no HypTree install recorded" in proc.stderr


@needs_bash
def test_the_copy_inside_a_checkout_installs_from_the_recorded_source(checkouts, tmp_path):
    ours, maple, _ = checkouts
    assert run_install(ours, maple).returncode == 0
    other = tmp_path / "other"
    # a second MaPLe-like checkout, installed into by the copy that landed in the first one
    _write(other, {"train.py": MAPLE_TRAIN, "trainers/__init__.py": "", "datasets/__init__.py": ""})
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE", "DRY_RUN", "HYPTREE_REPO")}
    env.update(PYTHONPATH=ROOT, PYTHON=sys.executable)
    proc = subprocess.run(
        [BASH, str(maple / "scripts" / "hyptree" / "install_into_maple.sh"), str(other)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert sorted(p.name for p in (other / "trainers").iterdir()) == ["__init__.py", "coop_hier.py", "maple_hyptree.py"]
    assert "import trainers.maple  #" not in (other / "train.py").read_text()  # MaPLe's own modules not added


def test_scripts_are_executable_and_strict():
    for name in ("base2novel.sh", "fewshot.sh", "crossdomain.sh", "ablation.sh", "install_into_maple.sh"):
        path = os.path.join(SCRIPTS, name)
        assert os.access(path, os.X_OK), name
        text = open(path).read()
        assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text, name
    assert yaml.safe_load("a: 1")  # yaml available for the helpers
