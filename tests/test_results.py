"""Result tables: seed groups, base-to-novel pairing and H, cross-domain, flags, CSV/Markdown, CLI."""

import csv
import json
import os

import fixtures_runs as F
import numpy as np
import pytest

from hyptree.eval import results as RS
from hyptree.eval import runs as RN
from hyptree.eval import tables as R

B2N = "base2new"
COMMON = "cifar100/shots_16/MaPLeHypTree/hyptree"


def _b2n(root, seeds_base=(1, 2, 3), seeds_novel=(1, 2, 3), base_la=None, novel_la=None, common=COMMON):
    """MaPLe layout: train_base runs (their own test = Base) and test_new eval-only runs."""
    base_la = base_la or {1: 80.0, 2: 82.0, 3: 84.0}
    novel_la = novel_la or {1: 60.0, 2: 64.0, 3: 62.0}
    for s in seeds_base:
        d = os.path.join(root, B2N, "train_base", common, f"seed{s}")
        F.write_results(
            d, seed=s, subsample="base", tree="base", output_dir=d, metrics={"LA": base_la[s], "HCA": base_la[s] - 20}
        )
    for s in seeds_novel:
        d = os.path.join(root, B2N, "test_new", common, f"seed{s}")
        md = os.path.join(root, B2N, "train_base", common, f"seed{s}")
        F.write_results(
            d,
            seed=s,
            subsample="new",
            tree="new",
            output_dir=d,
            model_dir=md,
            metrics={"LA": novel_la[s], "HCA": novel_la[s] - 30},
        )


def _table(tables, title):
    found = [t for t in tables if t.title == title]
    assert found, [t.title for t in tables]
    return found[0]


def _row(table, **match):
    idx = {h: i for i, h in enumerate(table.header)}
    rows = [r for r in table.rows if all(r[idx[k]] == v for k, v in match.items())]
    assert len(rows) == 1, (match, table.rows)
    return {h: rows[0][i] for h, i in idx.items()}


def _mean_std(values):
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.2f} ± {a.std():.2f}"


# --------------------------------------------------------------------------- few-shot


def test_fewshot_groups_seeds_mean_std(tmp_path):
    la = {1: 70.0, 2: 71.5, 3: 75.25}
    for shots in (1, 16):
        for s, v in la.items():
            F.write_results(
                tmp_path / "fewshot" / "cifar100" / f"shots_{shots}" / "MaPLeHypTree" / "hyptree" / f"seed{s}",
                seed=s,
                num_shots=shots,
                metrics={"LA": v + shots, "MTA": 50.0},
            )
    tables = R.collect(str(tmp_path))
    assert [t.name for t in tables] == ["fewshot"]
    t = tables[0]
    assert len(t.rows) == 2
    row = _row(t, Shots="16")
    assert row["LA"] == _mean_std([v + 16 for v in la.values()])  # population std, as CoOp's parser
    assert row["MTA"] == "50.00 ± 0.00"
    assert row["Seeds"] == "3" and row["Config"] == "hyptree" and row["Trainer"] == "MaPLeHypTree"
    assert row["Dataset"] == "CIFAR100Hier" and row["Note"] == ""
    assert _row(t, Shots="1")["LA"] == _mean_std([v + 1 for v in la.values()])


def test_ci95_instead_of_std(tmp_path):
    vals = [70.0, 72.0, 77.0]
    for s, v in enumerate(vals, 1):
        F.write_results(tmp_path / "h" / f"seed{s}", seed=s, metrics={"LA": v})
    t = R.collect(str(tmp_path), ci95=True)[0]
    ci = 1.96 * np.std(vals) / np.sqrt(3)
    assert _row(t, Seeds="3")["LA"] == f"{np.mean(vals):.2f} ± {ci:.2f}"


def test_missing_seed_flagged_against_other_groups_and_cli_seeds(tmp_path):
    for cfg, seeds in (("hyptree", (1, 2, 3)), ("protect", (1, 2))):
        for s in seeds:
            F.write_results(
                tmp_path / "fewshot" / "cifar100" / "shots_16" / "MaPLeHypTree" / cfg / f"seed{s}", seed=s, preset=cfg
            )
    t = R.collect(str(tmp_path))[0]
    assert _row(t, Config="protect")["Note"] == "missing seed(s) 3"
    assert _row(t, Config="protect")["Seeds"] == "2"
    assert _row(t, Config="hyptree")["Note"] == ""
    t = R.collect(str(tmp_path), seeds=[1, 2, 3, 4])[0]
    assert _row(t, Config="hyptree")["Note"] == "missing seed(s) 4"
    assert _row(t, Config="protect")["Note"] == "missing seed(s) 3,4"


def test_ablation_table_labels_variants(tmp_path):
    for variant in ("full", "euclidean"):
        F.write_results(
            tmp_path / "ablation" / "cifar100" / "shots_16" / "MaPLeHypTree" / "hyptree" / variant / "seed1", seed=1
        )
    tables = R.collect(str(tmp_path))
    assert [t.name for t in tables] == ["ablation"]
    assert sorted(r[3] for r in tables[0].rows) == ["hyptree/euclidean", "hyptree/full"]


def test_record_grouping_without_seed_folders(tmp_path):
    """Folders without seedS: grouped by the record (all fields but the seed)."""
    F.write_results(tmp_path / "a", seed=1, metrics={"LA": 10.0})
    F.write_results(tmp_path / "b", seed=2, metrics={"LA": 20.0})
    F.write_results(tmp_path / "c", seed=1, preset="protect", metrics={"LA": 99.0})
    t = R.collect(str(tmp_path))[0]
    assert len(t.rows) == 2
    assert _row(t, Config="hyptree")["LA"] == "15.00 ± 5.00"
    assert _row(t, Config="protect")["Seeds"] == "1"


def test_duplicate_seed_keeps_newest_and_says_so(tmp_path):
    F.write_results(tmp_path / "a", seed=1, time="2026-01-01T00:00:00", metrics={"LA": 10.0})
    F.write_results(tmp_path / "b", seed=1, time="2026-02-01T00:00:00", metrics={"LA": 30.0})
    row = _row(R.collect(str(tmp_path))[0], Seeds="1")
    assert row["LA"] == "30.00 ± 0.00"
    assert "seed 1 training: 2 runs, kept b" in row["Note"]


# --------------------------------------------------------------------------- base-to-novel


def test_base2novel_pairs_and_harmonic_mean(tmp_path):
    _b2n(tmp_path)
    tables = R.collect(str(tmp_path))
    assert [t.title for t in tables] == [f"Base-to-novel — {m}" for m in R.METRICS]
    row = _row(_table(tables, "Base-to-novel — LA"), Dataset="CIFAR100Hier")
    b, n = np.mean([80, 82, 84]), np.mean([60, 64, 62])
    assert row["Base"] == _mean_std([80, 82, 84])
    assert row["Novel"] == _mean_std([60, 64, 62])
    assert row["H"] == f"{2 * b * n / (b + n):.2f}"
    assert row["Seeds"] == "3" and row["Note"] == "" and row["Config"] == "hyptree"
    hca = _row(_table(tables, "Base-to-novel — HCA"), Dataset="CIFAR100Hier")
    assert hca["Novel"] == _mean_std([30, 34, 32])


def test_base2novel_missing_novel_seed_is_dropped_and_flagged(tmp_path):
    _b2n(tmp_path, seeds_novel=(1, 2))
    row = _row(_table(R.collect(str(tmp_path)), "Base-to-novel — LA"), Dataset="CIFAR100Hier")
    assert row["Seeds"] == "2"
    assert row["Base"] == _mean_std([80, 82])  # not averaged over seed 3's base alone
    assert row["Novel"] == _mean_std([60, 64])
    assert "seed 3 dropped: novel missing" in row["Note"]


def test_base2novel_without_any_novel_run(tmp_path):
    _b2n(tmp_path, seeds_novel=())
    row = _row(_table(R.collect(str(tmp_path)), "Base-to-novel — LA"), Dataset="CIFAR100Hier")
    assert row["Novel"] == "–" and row["H"] == "–"
    assert row["Base"] == _mean_std([80, 82, 84])
    assert "no novel runs" in row["Note"]


def test_base2novel_prefers_explicit_test_base(tmp_path):
    _b2n(tmp_path)
    for s in (1, 2, 3):
        d = tmp_path / B2N / "test_base" / COMMON / f"seed{s}"
        F.write_results(
            d,
            seed=s,
            subsample="base",
            tree="base",
            model_dir=str(tmp_path / B2N / "train_base" / COMMON / f"seed{s}"),
            metrics={"LA": 90.0},
        )
    row = _row(_table(R.collect(str(tmp_path)), "Base-to-novel — LA"), Dataset="CIFAR100Hier")
    assert row["Base"] == "90.00 ± 0.00"


def test_model_dir_matches_by_suffix_after_moving_the_output(tmp_path):
    """Runs made in /cluster/output/... and copied: model_dir still names the training run."""
    _b2n(tmp_path)
    for s in (1, 2, 3):
        path = tmp_path / B2N / "test_new" / COMMON / f"seed{s}" / "results.json"
        rec = json.loads(path.read_text())
        rec["model_dir"] = f"/cluster/me/output/{B2N}/train_base/{COMMON}/seed{s}"
        path.write_text(json.dumps(rec))
    groups = RN.group_runs(RN.load_runs(str(tmp_path)))
    assert len(groups) == 1 and sorted(groups[0].parts["novel"]) == [1, 2, 3]
    # also when the collected root is deeper than the layout's top
    groups = RN.group_runs(RN.load_runs(str(tmp_path / B2N)))
    assert len(groups) == 1 and groups[0].kind == "base2novel"


def test_eval_only_runs_of_an_outside_model_pair_by_model_dir(tmp_path):
    """MaPLe's reproduce script: test_base and test_new evaluations of published weights."""
    for sub, tree, la in (("base", "base", 80.0), ("new", "new", 60.0)):
        for s in (1, 2):
            F.write_results(
                tmp_path / f"test_{sub}" / COMMON / f"seed{s}",
                seed=s,
                subsample=sub,
                tree=tree,
                model_dir=f"/weights/maple/base/seed{s}",
                metrics={"LA": la},
            )
    row = _row(_table(R.collect(str(tmp_path)), "Base-to-novel — LA"), Seeds="2")
    assert row["Base"] == "80.00 ± 0.00" and row["Novel"] == "60.00 ± 0.00" and row["H"] == "68.57"


def test_harmonic_mean():
    assert R.harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert R.harmonic_mean(0.0, 0.0) == 0.0
    assert R.harmonic_mean(None, 5.0) is None


# --------------------------------------------------------------------------- cross-domain


def _xd(
    root, seeds=(1, 2), targets=("ImageNetRHier", "ImageNetV2Hier", "ImageNetSketchHier", "ImageNetAHier"), skip=()
):
    tail = "shots_16/MaPLeHypTree/hyptree"
    for s in seeds:
        train = os.path.join(root, "crossdomain", "train", "imagenet", tail, f"seed{s}")
        F.write_results(train, seed=s, dataset="ImageNetHier", metrics={"LA": 70.0 + s})
        for k, t in enumerate(targets):
            if (t, s) in skip:
                continue
            F.write_results(
                os.path.join(root, "crossdomain", "test", t.lower(), tail, f"seed{s}"),
                seed=s,
                dataset=t,
                tree=t,
                model_dir=train,
                num_shots=-1,
                metrics={"LA": 40.0 + 10 * k + s},
            )


def test_crossdomain_table_source_targets_and_mean(tmp_path):
    _xd(tmp_path)
    tables = R.collect(str(tmp_path))
    la = _table(tables, "Cross-domain — LA")
    # paper order: V2, Sketch, A, R
    assert la.header[6:10] == ["ImageNetV2Hier", "ImageNetSketchHier", "ImageNetAHier", "ImageNetRHier"]
    row = _row(la, Source="ImageNetHier")
    assert row["On source"] == _mean_std([71, 72])
    assert row["ImageNetRHier"] == _mean_std([41, 42])
    assert row["ImageNetV2Hier"] == _mean_std([51, 52])
    assert row["Target mean"] == f"{np.mean([41.5, 51.5, 61.5, 71.5]):.2f}"
    assert row["Shots"] == "16" and row["Seeds"] == "2" and row["Note"] == ""


def test_crossdomain_missing_target_seed_flagged(tmp_path):
    _xd(tmp_path, skip={("ImageNetAHier", 2)})
    row = _row(_table(R.collect(str(tmp_path)), "Cross-domain — LA"), Source="ImageNetHier")
    assert "seed 2 dropped: ImageNetAHier missing" in row["Note"]
    assert row["On source"] == "71.00 ± 0.00" and row["Seeds"] == "1"


# --------------------------------------------------------------------------- files, CLI


def test_load_runs_errors_and_warnings(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        RN.load_runs(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no results.json under"):
        RN.load_runs(str(tmp_path))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{half")
    with pytest.warns(UserWarning, match="bad.results.json: skipped"):
        with pytest.raises(FileNotFoundError, match="no readable results.json"):
            RN.load_runs(str(tmp_path))
    F.write_results(tmp_path / "good" / "seed1")
    with pytest.warns(UserWarning):
        assert len(RN.load_runs(str(tmp_path))) == 1


def test_missing_metric_shows_dash(tmp_path):
    F.write_results(tmp_path / "x" / "seed1", metrics={"node_acc": None})
    row = _row(R.collect(str(tmp_path))[0], Seeds="1")
    assert row["node_acc"] == "–" and row["LA"] == "70.00 ± 0.00"


def test_csv_long_format_and_markdown(tmp_path):
    _b2n(tmp_path / "out")
    tables = R.collect(str(tmp_path / "out"), metrics=["LA"])
    RS.write_csv(tables, str(tmp_path / "t.csv"))
    rows = list(csv.DictReader(open(tmp_path / "t.csv", encoding="utf-8")))
    assert tuple(rows[0]) == R.CSV_FIELDS
    by_part = {r["part"]: r for r in rows}
    assert set(by_part) == {"base", "novel", "H"}
    assert float(by_part["base"]["mean"]) == pytest.approx(82.0)
    assert float(by_part["novel"]["std"]) == pytest.approx(np.std([60, 64, 62]), abs=1e-4)
    assert by_part["novel"]["seeds"] == "1,2,3" and by_part["novel"]["n"] == "3"
    assert float(by_part["H"]["mean"]) == pytest.approx(R.harmonic_mean(82.0, 62.0), abs=1e-4)
    assert by_part["base"]["group"] == f"{B2N}/train_base/{COMMON}"
    md = RS.to_markdown(tables)
    lines = md.splitlines()
    assert lines[0] == "### Base-to-novel — LA"
    assert lines[2].startswith("| Dataset | Shots | Trainer | Config | Seeds | Base | Novel | H |")
    assert len({line.count("|") for line in lines if line.startswith("|")}) == 1  # aligned columns


def test_match_filters_groups(tmp_path):
    for ds in ("cifar100", "sun397"):
        F.write_results(tmp_path / ds / "shots_16" / "MaPLeHypTree" / "hyptree" / "seed1", dataset=ds)
    t = R.collect(str(tmp_path), match=["sun397", "MaPLeHypTree"])[0]
    assert [r[0] for r in t.rows] == ["sun397"]
    with pytest.raises(FileNotFoundError, match="match"):
        R.collect(str(tmp_path), match=["imagenet"])


def test_cli_prints_writes_and_plots(tmp_path, capsys):
    run = tmp_path / "out" / "fewshot" / "toy" / "shots_4" / "MaPLeHypTree" / "hyptree" / "seed1"
    F.write_full_run(str(run))
    code = RS.main(
        [
            str(tmp_path / "out"),
            "--csv",
            str(tmp_path / "t.csv"),
            "--markdown",
            str(tmp_path / "t.md"),
            "--plots",
            "--metrics",
            "LA",
            "MTA",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "### Few-shot" in out and "| Dataset | Shots | Trainer | Config | Seeds | LA | MTA | Note |" in out
    assert (tmp_path / "t.md").read_text(encoding="utf-8").startswith("### Few-shot")
    assert (tmp_path / "t.csv").exists()
    for png in ("curvatures.png", "losses.png", "depth_acc.png", "poincare.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_cli_error_when_nothing_found(tmp_path, capsys):
    assert RS.main([str(tmp_path)]) == 2
    assert "no results.json under" in capsys.readouterr().err


def test_module_runs_as_script(tmp_path):
    import subprocess
    import sys

    F.write_results(tmp_path / "r" / "seed1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "hyptree", "results", str(tmp_path)], capture_output=True, text=True, cwd=root
    )
    assert proc.returncode == 0, proc.stderr
    assert "70.00 ± 0.00" in proc.stdout
