"""python -m hyptree sweep: the run list shared with the protocol scripts, submitit's local
executor (same folders and tables as the scripts; a preempted job resumes), the SLURM
submission submitit writes (fake sbatch on PATH), the local GPU pool, changed options."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
from test_scripts import ROOT, make_work, needs_bash, parse_call, run_script

from hyptree.run import runlist as RL
from hyptree.run import sweep as S

submitit = pytest.importorskip("submitit")  # in the test extra; never needed by the library


@pytest.fixture
def work(tmp_path):
    """The protocol scripts' working folder (train.py, configs, the fake python), plus a small
    dataset ``mini`` whose runs use the preset configs (``toy*`` datasets default to tiny_cpu)."""
    w = make_work(tmp_path)
    (w / "configs" / "datasets" / "mini.yaml").write_text('DATASET:\n  NAME: "ToyHier"\n')
    return w


def fake_python(work):
    return str(work.parent / "fakepython")


def run_sweep(work, *args, extra_path=None, **env):
    log = work.parent / "calls.jsonl"
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "CUDA_VISIBLE_DEVICES")}
    full_env.update(FAKE_LOG=str(log), PYTHONPATH=ROOT, **env)
    if extra_path:
        full_env["PATH"] = f"{extra_path}:{full_env['PATH']}"
    before = log.read_text().splitlines() if log.exists() else []
    proc = subprocess.run(
        [sys.executable, "-m", "hyptree", "sweep", *args, "--python", fake_python(work)]
        if args and args[0] == "run"
        else [sys.executable, "-m", "hyptree", "sweep", *args],
        cwd=work,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = log.read_text().splitlines() if log.exists() else []
    return proc, [json.loads(line) for line in after[len(before) :]]


def results_dirs(root):
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("results.json"))


def tables_text(root):
    from hyptree.eval.results import to_markdown
    from hyptree.eval.tables import collect

    return to_markdown(collect(str(root)))


def wait_for(path, timeout=60):
    end = time.time() + timeout
    while not os.path.exists(path):
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.1)


@needs_bash
def test_grid_through_submitit_local_executor_matches_the_scripts(work, tmp_path, monkeypatch, capsys):
    """2 datasets x 2 seeds of base-to-novel: same folders, same train.py calls, same tables."""
    other = tmp_path / "repo2"
    shutil.copytree(work, other)
    script_calls = []
    for dataset in ("mini", "cifar100"):
        proc, calls = run_script(work, "base2novel.sh", dataset, "1", "2", SHOTS="2")
        assert proc.returncode == 0, proc.stderr
        script_calls += calls

    monkeypatch.chdir(other)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "sweep_calls.jsonl"))
    monkeypatch.setenv("PYTHONPATH", ROOT)
    grid = {"protocols": ["base2novel"], "datasets": ["mini", "cifar100"], "seeds": ["1", "2"], "shots": ["2"]}
    runs = S.build_runs(grid, [])
    assert [len(c) for c in RL.chains(runs)] == [2, 2, 2, 2]  # each training run, then its evaluation
    executor = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    executor.update_parameters(timeout_min=5)
    jobs = S.submit_jobs(executor, runs, fake_python(work))
    assert len(jobs) == 4
    assert all(job.result() for job in jobs)
    sweep_calls = [json.loads(x) for x in (tmp_path / "sweep_calls.jsonl").read_text().splitlines()]
    assert sorted(map(json.dumps, sweep_calls)) == sorted(map(json.dumps, script_calls))
    for c in sweep_calls:  # each evaluation came after its training run in the same job
        flags = parse_call(c)[0]
        if "--model-dir" in flags:
            assert os.path.isfile(os.path.join(flags["--model-dir"], "results.json"))
    assert results_dirs(other / "output") == results_dirs(work / "output") and len(results_dirs(work / "output")) == 8
    assert tables_text(other / "output") == tables_text(work / "output")
    capsys.readouterr()
    S.print_tables(runs, [1, 2])
    printed = capsys.readouterr().out
    assert printed.strip() == tables_text(other / "output/base2new").strip()
    assert "| ToyHier | 2 | MaPLeHypTree | hyptree | 2 | 71.50 ± 0.50 | 51.50 ± 0.50 |" in printed
    # everything finished: nothing submitted again
    assert S.submit_jobs(executor, runs, fake_python(work)) == []


def test_preempted_job_is_requeued_and_resumes(work, tmp_path, monkeypatch):
    monkeypatch.chdir(work)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_SLEEP", "seed1")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    runs = S.build_runs({"protocols": ["base2novel"], "datasets": ["mini"], "seeds": ["1"], "shots": ["2"]}, [])
    executor = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    executor.update_parameters(timeout_min=5)
    (job,) = S.submit_jobs(executor, runs, fake_python(work))
    train_dir = "output/base2new/train_base/mini/shots_2/MaPLeHypTree/hyptree/seed1"
    wait_for(os.path.join(work, train_dir, "checkpoint"))
    # SLURM's preemption / timeout signal (USR2) to the job's task: ChainJob.checkpoint() stops
    # train.py and requeues the same job, which resumes the run
    (task,) = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(job._process.pid)], capture_output=True, text=True
    ).stdout.split()
    os.kill(int(task), signal.SIGUSR2)
    assert job.result() is True
    calls = [parse_call(json.loads(x))[0] for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c["--output-dir"] for c in calls] == [train_dir, train_dir, train_dir.replace("train_base", "test_new")]
    assert "--resume" not in calls[0] and calls[1]["--resume"] == train_dir
    assert os.path.isfile(os.path.join(work, train_dir, "results.json"))
    assert "Caught signal SIGUSR2" in job.stderr()


FAKE_SLURM = {
    "sbatch": '#!/bin/sh\nfor a; do f=$a; done\ncp "$f" "$SBATCH_COPY"\necho "Submitted batch job 4242"\n',
    "srun": "#!/bin/sh\nexit 0\n",
    "sacct": "#!/bin/sh\necho 'JobID|State|NodeList'\n",
    "squeue": "#!/bin/sh\nexit 0\n",
    "scontrol": "#!/bin/sh\nexit 0\n",
}


def test_slurm_submission_has_the_directives_and_array_size(work, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    copy = tmp_path / "submitted.sh"
    args = ["run", "--protocols", "fewshot", "--datasets", "mini", "cifar100", "--seeds", "1", "2", "3"]
    args += ["--shots", "2", "--launcher", "slurm", "--partition", "gpu", "--gpus-per-job", "1", "--cpus", "6"]
    args += ["--mem", "32", "--time", "120", "--account", "lab", "--qos", "high", "--array-parallelism", "2"]
    args += ["--sbatch", "constraint=a100", "--sbatch", "mail-type=END", "--setup", "module load cuda"]
    proc, calls = run_sweep(work, *args, extra_path=bin_dir, SBATCH_COPY=str(copy))
    assert proc.returncode == 0, proc.stderr
    assert calls == []  # nothing runs here
    text = copy.read_text()
    for line in (
        "#SBATCH --array=0-5%2",  # 6 jobs (2 datasets x 3 seeds), 2 at a time
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=120",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "#SBATCH --mail-type=END",
        "#SBATCH --signal=USR2@90",  # submitit's preemption / timeout signal -> ChainJob.checkpoint
        "module load cuda",
    ):
        assert line in text.splitlines(), line
    assert proc.stdout.count("[submitted] 4242_") == 6
    pickles = sorted((work / "output/.sweep/slurm").rglob("*_submitted.pkl"))
    assert len(pickles) == 6
    with open(pickles[0], "rb") as f:
        delayed = pickle.load(f)
    assert isinstance(delayed.function, S.ChainJob) and hasattr(delayed.function, "checkpoint")
    dirs = sorted(delayed.function.chain[0].out_dir for p in pickles for delayed in [pickle.load(open(p, "rb"))])
    assert dirs[0] == "output/fewshot/cifar100/shots_2/MaPLeHypTree/hyptree/seed1"

    proc, _ = run_sweep(work, *args[:-6], "--dry-run", extra_path=bin_dir, SBATCH_COPY=str(tmp_path / "dry.sh"))
    assert proc.returncode == 0, proc.stderr
    assert "6 run(s) in 6 job(s)" in proc.stdout and "slurm partition: gpu" in proc.stdout
    assert "slurm array_parallelism: 2" in proc.stdout and not (tmp_path / "dry.sh").exists()


def test_local_launcher_runs_one_job_per_gpu(work, tmp_path):
    env_log = tmp_path / "env.jsonl"
    args = ["run", "--protocols", "fewshot", "--datasets", "mini", "--seeds", "1", "2", "3", "4", "--shots", "2"]
    proc, calls = run_sweep(
        work, *args, "--launcher", "local", "--gpus", "0,1", FAKE_ENV_LOG=str(env_log), FAKE_DELAY="0.5"
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in env_log.read_text().splitlines()]
    assert len(rows) == 4 and {r["cuda"] for r in rows} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((r["t0"], r["t1"]) for r in rows if r["cuda"] == gpu)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"two runs at once on GPU {gpu}: {spans}"
    log = work / "output/fewshot/mini/shots_2/MaPLeHypTree/hyptree/seed3/launch.log"
    assert "fake train.py wrote" in log.read_text()
    assert "| ToyHier | 2 | MaPLeHypTree | hyptree | 4 |" in proc.stdout  # the table at the end


@needs_bash
def test_changed_options_are_refused_with_the_difference(work):
    proc, _ = run_script(work, "fewshot.sh", "mini", "2", "1", "2", FAKE_CRASH="seed2")
    assert proc.returncode != 0
    proc, calls = run_script(work, "fewshot.sh", "mini", "2", "1", "2", "--", "OPTIM.LR", "0.5")
    assert proc.returncode != 0 and calls == []
    assert "options changed for 2 run folder(s)" in proc.stderr
    assert "seed1 (finished;" in proc.stderr and "seed2 (started;" in proc.stderr
    assert "OPTIM.LR: (unset) -> 0.5" in proc.stderr and "RUN_NAME" in proc.stderr
    cfg = work / "configs/trainers/MaPLeHypTree/hyptree.yaml"
    cfg.write_text(cfg.read_text().replace("MAX_EPOCH: 5", "MAX_EPOCH: 6"))
    proc, calls = run_script(work, "fewshot.sh", "mini", "2", "1")
    assert proc.returncode != 0 and calls == [] and "hyptree.yaml (file content):" in proc.stderr
    cfg.write_text(cfg.read_text().replace("MAX_EPOCH: 6", "MAX_EPOCH: 5"))
    proc, calls = run_script(work, "fewshot.sh", "mini", "2", "1", "2", DATA="/elsewhere")  # the data root may move
    assert proc.returncode == 0, proc.stderr
    assert [parse_call(c)[0].get("--resume") for c in calls] == [
        "output/fewshot/mini/shots_2/MaPLeHypTree/hyptree/seed2"
    ]


@needs_bash
def test_status_lists_done_and_failed_with_logs(work):
    proc, _ = run_script(work, "base2novel.sh", "mini", "1", "2", FAKE_CRASH="seed2")
    assert proc.returncode != 0
    proc, _ = run_sweep(work, "status", "output")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(
        x.startswith("done") and x.endswith("train_base/mini/shots_16/MaPLeHypTree/hyptree/seed1") for x in lines
    )
    assert any(
        x.startswith("failed (exit 3)") and "train_base/mini/shots_16/MaPLeHypTree/hyptree/seed2" in x for x in lines
    )
    assert lines[-1] == "2 done, 1 failed"
    proc, _ = run_sweep(work, "tables", "output/base2new")
    assert proc.returncode == 0 and "### Base-to-novel — LA" in proc.stdout


def test_grid_file_and_errors(work, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "protocols: [fewshot, crossdomain]\ndatasets: mini\npresets: [vanilla, hyptree]\n"
        "shots: [1, 2]\nseeds: [1]\ntargets: mini\nsource: cifar100\n"
    )
    proc, calls = run_sweep(work, "run", str(grid), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert calls == []
    # fewshot: 2 presets x 2 shots; crossdomain: 2 x 2 x (train + 1 target)
    assert "12 run(s) in 8 job(s)" in proc.stdout
    assert "new     eval  output/crossdomain/test/mini/shots_1/MaPLeHypTree/vanilla/seed1" in proc.stdout
    grid.write_text("protocols: fewshot\ndatasets: mini\nshot: 2\n")
    proc, _ = run_sweep(work, "run", str(grid))
    assert proc.returncode == 2 and f"{grid}: unknown key(s) shot" in proc.stderr
    proc, _ = run_sweep(work, "run", "--protocols", "ablation", "--datasets", "mini", "--presets", "vanilla")
    assert proc.returncode == 2 and "ablations modify the hyptree preset" in proc.stderr
    proc, _ = run_sweep(work, "run", "--protocols", "fewshot", "--datasets", "mini", "--launcher", "local")
    assert proc.returncode == 2 and "needs --gpus" in proc.stderr


def test_submitit_is_optional(monkeypatch):
    code = "import sys, hyptree.run.sweep, hyptree.run.runlist; print('submitit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True)
    assert out.stdout.strip() == b"False", out.stderr
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[sweep\]"'):
        S.submit_slurm([], "python", {}, "folder")
