"""scripts/setup.sh (the pip sequence, with a recording stand-in for pip) and the CI switch
HYPTREE_REQUIRE_DASSL=1 in tests/conftest.py."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash not found")

FAKE_PIP = """\
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(sys.argv[2:]) + "\\n")
"""


def run_setup(tmp_path, *args):
    fake = tmp_path / "fake_pip.py"
    fake.write_text(FAKE_PIP)
    log = tmp_path / "pip.jsonl"
    env = {**os.environ, "PIP": f"{sys.executable} {fake} {log}", "PYTHON": shutil.which("true")}
    proc = subprocess.run(
        [BASH, os.path.join(ROOT, "scripts", "setup.sh"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


@needs_bash
def test_setup_installs_hyptree_then_dassl_without_its_pins(tmp_path):
    proc, calls = run_setup(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [c[:3] for c in calls] == [["install", "--progress-bar", "off"]] * 4
    hyptree, build, dassl, runtime = (c[3:] for c in calls)
    assert hyptree == ["-e", f"{ROOT}[test]"]
    assert build == ["numpy", "setuptools<81", "wheel"]
    assert dassl == ["--no-deps", "--no-build-isolation", "git+https://github.com/KaiyangZhou/Dassl.pytorch"]
    assert {"tensorboard", "tabulate", "gdown", "wilds", "yacs"} <= set(runtime)
    assert not {"tb-nightly", "flake8==3.7.9", "wilds==1.2.2"} & set(runtime)


@needs_bash
def test_setup_takes_a_wheel_or_a_checkout_and_refuses_anything_else(tmp_path):
    wheel = tmp_path / "dassl-0.6.3-py3-none-any.whl"
    wheel.write_bytes(b"")
    checkout = tmp_path / "Dassl.pytorch"
    (checkout / "dassl").mkdir(parents=True)
    (checkout / "setup.py").write_text("")
    for given, expected in ((wheel, str(wheel)), (checkout, str(checkout))):
        (tmp_path / "pip.jsonl").unlink(missing_ok=True)
        proc, calls = run_setup(tmp_path, "--dassl", os.path.relpath(given))
        assert proc.returncode == 0, proc.stderr
        assert calls[2][-1] == expected  # made absolute
    (tmp_path / "pip.jsonl").unlink()
    proc, calls = run_setup(tmp_path, "--dassl", str(tmp_path / "nothing"))
    assert proc.returncode != 0 and calls == []
    assert "neither 'git', a Dassl wheel (*.whl) nor a Dassl checkout" in proc.stderr


def test_ci_switch_turns_a_missing_dassl_into_an_error(tmp_path):
    broken = tmp_path / "site" / "dassl"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this Dassl is broken')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{ROOT}", "HYPTREE_REQUIRE_DASSL": "1"}
    args = [sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider", "tests/test_files.py"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "HYPTREE_REQUIRE_DASSL=1 but Dassl does not import (this Dassl is broken)" in proc.stderr + proc.stdout
    assert "bash scripts/setup.sh" in proc.stderr + proc.stdout
    env.pop("HYPTREE_REQUIRE_DASSL")
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
