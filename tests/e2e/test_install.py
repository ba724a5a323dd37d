"""Installs that work outside the repository: Fashion-MNIST is package data, and a built wheel in
a fresh virtualenv runs the bare main job offline from another working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deep_representation_one_class.datasets import fmnist

REPO = Path(__file__).resolve().parents[2]
_NOT_SOURCE = (
    ".git",
    "runs",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".venv",
    "report_files",
)


def test_fashion_mnist_is_package_data():
    """The shipped files sit inside the package and the wheel's package-data globs take them."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    package = REPO / "deep_representation_one_class"
    assert package / "data" / "fashion_mnist" == fmnist.SHIPPED_DIR
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["deep_representation_one_class"]
    shipped = {p for g in globs for p in package.glob(g)}
    for stem in fmnist.IDX_FILES.values():
        path = fmnist.SHIPPED_DIR / f"{stem}.gz"
        if not path.is_file():
            pytest.skip(f"{path} is absent from this checkout")
        assert path in shipped, path
    assert fmnist.SHIPPED_DIR / "LICENSE" in shipped


def _offline(cmd: list[str]) -> tuple[list[str], str]:
    """``cmd`` in a new network namespace with no interfaces (root), else as is, and why."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *cmd], "no network (unshare -n)"
    return cmd, "network not cut off (unshare -n unavailable); the run must not need it anyway"


@pytest.mark.slow
def test_wheel_runs_the_main_job_offline_from_another_directory(tmp_path):
    """``pip wheel`` -> fresh venv (system site packages for TensorFlow, nothing downloaded) ->
    ``droc-train --method=contrastive`` from an unrelated folder, without network."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "-w",
            str(wheels),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = wheels.glob("deep_representation_one_class-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    bin_dir = venv / "bin"
    install = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    where = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import deep_representation_one_class as p; print(p.__file__)",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the wheel, not a checkout

    cmd, how = _offline(
        [
            str(bin_dir / "droc-train"),
            "--method=contrastive",
            "--train_steps=5",
            "--classifiers=gde",
            "--model_dir=run",
        ]
    )
    train = subprocess.run(
        cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=1800
    )
    assert train.returncode == 0, f"{how}\n{train.stderr[-4000:]}"
    summary = json.loads((elsewhere / "run" / "summary.json").read_text())
    assert summary["config"]["dataset"] == "fmnistood" and summary["run"]["global_step"] == 5
    assert 0 <= summary["metrics"]["pool.gde"] <= 100
    assert (elsewhere / "run" / "report.html").is_file()
    print(how)
