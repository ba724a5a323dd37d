"""The command line as a user meets it: the ``droc`` verbs, their help, their installed aliases,
and ``--precision`` whose flag choices and resolver agree (``auto`` was refused by the flag)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _reliability as rel
import pytest
from absl import flags

from deep_representation_one_class import config as config_lib
from deep_representation_one_class import droc, main, resolve
from deep_representation_one_class.utils import hardware

FLAGS = flags.FLAGS


def _verb_help(verb: str, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_verb sets the verb's own argv
    FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as exit_:
        droc.run_verb(verb, ["--help"])
    FLAGS.unparse_flags()
    out = capsys.readouterr().out
    assert exit_.value.code in (0, None), out
    return out


def test_droc_help_lists_every_verb_without_loading_tensorflow():
    code = (
        "import sys; from deep_representation_one_class import droc; "
        "code = droc.main(['--help']); "
        "print('TF-LOADED' if 'tensorflow' in sys.modules else 'TF-NOT-LOADED', code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=rel.REPO, env=rel.env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "TF-NOT-LOADED 0" in out.stdout
    verbs = out.stdout.split("verbs:")[1].split("TF-")[0]
    listed = [line.split()[0] for line in verbs.splitlines() if line.strip()]
    assert listed == list(droc.VERBS)
    assert set(droc.VERBS) == {
        "train", "evaluate", "score", "export", "explain", "report", "aggregate", "bench"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["trian"], "did you mean 'train'"), (["serve"], "valid: train, evaluate")],
)
def test_an_unknown_verb_is_one_line_and_exit_2(argv, fragment, capsys):
    assert droc.main(argv) == droc.EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_no_verb_prints_the_usage_and_fails(capsys):
    assert droc.main([]) == droc.EXIT_USAGE
    assert "verbs:" in capsys.readouterr().err


def test_droc_train_help_shows_the_run_flags(monkeypatch, capsys):
    out = _verb_help("train", monkeypatch, capsys)
    assert out.startswith("usage: droc train")
    for name in ("--method", "--dataset", "--precision", "--model_dir", "--temperature"):
        assert name in out, name
    assert "auto" in out.split("\n  --precision:")[1].split("\n  --")[0]


@pytest.mark.parametrize("verb", [v for v in droc.VERBS if v != "train"])
def test_droc_verb_help_shows_the_verbs_flags(verb, monkeypatch, capsys):
    out = _verb_help(verb, monkeypatch, capsys)
    # Usage lines name the command as typed (droc VERB), not an alias of it.
    assert out.startswith(f"usage: droc {verb} ") and "--" in out, out


def test_every_verb_is_installed_as_droc_and_as_an_alias():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(os.path.join(rel.REPO, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["droc"] == "deep_representation_one_class.droc:run_cli"
    for verb, spec in droc.VERBS.items():
        target = scripts[f"droc-{verb}"]
        module, _, function = target.partition(":")
        assert function == "run_cli", target
        # The alias runs the same command line as the verb.
        assert (
            __import__(module, fromlist=["run_cli"]).run_cli
            is __import__(spec.module, fromlist=["run_cli"]).run_cli
        ), verb


def test_the_precision_flag_accepts_what_the_resolver_resolves():
    choices = FLAGS["precision"].parser.enum_values
    assert set(choices) == set(config_lib.PRECISION_CHOICES)
    assert "auto" in choices
    for choice in choices:
        assert resolve.resolve_precision(choice) in config_lib.PRECISIONS, choice


@pytest.mark.parametrize(("native", "want"), [(True, "mixed_bfloat16"), (False, "float32")])
def test_precision_auto_through_the_real_flag_parser(native, want, monkeypatch):
    monkeypatch.setattr(hardware, "fast_bfloat16", lambda: native)
    FLAGS.unparse_flags()
    try:
        main.parse_flags(["droc train", "--dataset=fake", "--precision=auto"])
        cfg = main.config_from_flags()
    finally:
        FLAGS.unparse_flags()
    assert cfg.precision == want


def test_train_and_eval_loop_precision_auto_then_droc_evaluate(tmp_path):
    """The command of the bug report, end to end (tiny), then a verb through ``droc``."""
    run_dir = tmp_path / "run"
    out = rel.run("--precision=auto", "--train_steps=2", f"--model_dir={run_dir}")
    assert out.returncode == 0, out.stderr[-2000:]
    written = json.loads((run_dir / "config.json").read_text())["precision"]
    assert written == resolve.resolve_precision("auto")
    assert written in config_lib.PRECISIONS
    # evaluate's --precision takes the same choices and records what "auto" resolved to.
    flags_ = [f"--model_dir={run_dir}", "--classifiers=gde", "--reextract", "--precision=auto"]
    evaluate = subprocess.run(
        [sys.executable, "-m", "deep_representation_one_class.droc", "evaluate", *flags_],
        cwd=rel.REPO,
        env=rel.env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert any(k.endswith(".gde") for k in summary["metrics"]), sorted(summary["metrics"])
    assert summary["eval_precision"] == written
