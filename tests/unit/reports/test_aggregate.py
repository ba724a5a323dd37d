"""Tests of the result aggregation on synthetic run-folder trees, and of the paper's numbers."""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import statistics
import subprocess
import sys

import pytest

from deep_representation_one_class.reports import aggregate as agg
from deep_representation_one_class.reports import paper_results as paper
from deep_representation_one_class.reports.run_records import dataset_spec, representation_label
from deep_representation_one_class.utils import io as droc_io

REPO = str(pathlib.Path(__file__).resolve().parents[3])
FULL_TASKS = {  # --dataset -> (categories, constant AUROC) for a complete synthetic 43-task set
    "cifar10ood": ([str(i) for i in range(10)], 90.0),
    "cifar20ood": ([str(i) for i in range(20)], 80.0),
    "fmnistood": ([str(i) for i in range(10)], 95.0),
    "dogvscatood": (["0", "1"], 85.0),
    "celeba": (["Eyeglasses"], 70.0),
}


def write_run(
    root,
    method="contrastive",
    dataset="cifar10ood",
    category="0",
    seed=1,
    metrics=None,
    distaug="1",
    num_epoch=2048,
    finished=True,
):
    """Writes one run folder the way the trainer does; returns its path."""
    folder = root / method / dataset / f"c{category}" / f"s{seed}" / distaug
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "method": method,
        "dataset": dataset,
        "category": str(category),
        "seed": seed,
        "distaug_type": distaug,
        "num_epoch": num_epoch,
        "net_type": "resnet18",
    }
    if not finished:
        (folder / "config.json").write_text(json.dumps(config))
        return folder
    summary = {
        "metrics": metrics if metrics is not None else {"pool.kde": 90.0},
        "config": config,
        "run": {"global_step": 10, "train_seconds": 1800.0, "eval_seconds": 1.0, "complete": True},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def build(root, **kwargs):
    runs, unfinished, warnings = agg.scan_runs([str(root)])
    return agg.aggregate(runs, unfinished, warnings, roots=[str(root)], **kwargs)


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize(
    ("config", "label"),
    [
        ({"method": "contrastive", "num_epoch": 0}, "ResNet-18 (random)"),
        ({"method": "imagenet", "num_epoch": 0}, "ResNet-50 (ImageNet)"),
        ({"method": "rotnet", "num_epoch": 2048}, "RotNet"),
        ({"method": "denoising"}, "Denoising"),
        ({"method": "rotation"}, "Rotation prediction"),
        ({"method": "UnsupEmbed"}, "Rotation prediction"),
        ({"method": "contrastive", "distaug_type": "1"}, "Contrastive"),
        ({"method": "contrastive", "distaug_type": 1}, "Contrastive"),
        ({"method": "Contrastive", "distaug_type": ""}, "Contrastive"),
        ({"method": "contrastive", "distaug_type": "None"}, "Contrastive"),
        ({"method": "contrastive", "distaug_type": "rot"}, "Contrastive (DA)"),
        ({"method": "contrastive", "distaug_type": "hflip"}, "Contrastive (DA)"),
        ({"train": {"method": {"name": "contrastive"}, "distaug_type": "rot"}}, "Contrastive (DA)"),
        ({"method": "fake_method"}, "fake_method"),
    ],
)
def test_representation_label(config, label):
    assert representation_label(config) == label


def test_dataset_spec_aliases_and_categories():
    assert dataset_spec("fashion_mnistood", "3.0")[0].label == "f-MNIST"
    assert dataset_spec("fmnistood", "3.0")[1] == "3"
    assert dataset_spec("dvcood", 1)[0] == dataset_spec("dogvscatood", 1)[0]
    spec, category = dataset_spec("celeba", "EYEGLASSES")
    assert (spec.label, category, spec.categories) == (
        "CelebA eyeglasses",
        "Eyeglasses",
        ("Eyeglasses",),
    )
    assert dataset_spec("celeba", "Smiling")[0].label == "CelebA smiling"
    assert dataset_spec("cifar20ood", "0")[0].categories == tuple(str(i) for i in range(20))
    assert dataset_spec("mystery", "0")[0].categories is None
    assert dataset_spec("cifar10ood", "3")[0].category_name("3") == "cat"


def test_seed_mean_and_sample_sd_then_category_average(tmp_path):
    for seed, value in zip((1, 2, 3), (90.0, 92.0, 94.0)):
        write_run(tmp_path, category="0", seed=seed, metrics={"pool.kde": value}, distaug="rot")
    for seed, value in zip((1, 2, 3), (80.0, 80.0, 83.0)):
        write_run(tmp_path, category="1", seed=seed, metrics={"pool.kde": value}, distaug="rot")
    report = build(tmp_path)
    c0 = report.per_category[("Contrastive (DA)", "KDE", "CIFAR-10", "0")]
    assert (c0.n, c0.mean) == (3, pytest.approx(92.0))
    assert c0.sd == pytest.approx(2.0)  # ddof=1; ddof=0 would give 1.633
    c1 = report.per_category[("Contrastive (DA)", "KDE", "CIFAR-10", "1")]
    assert c1.sd == pytest.approx(statistics.stdev([80.0, 80.0, 83.0]))
    dataset = report.per_dataset[("Contrastive (DA)", "KDE", "CIFAR-10")]
    assert dataset.n == 2
    assert dataset.mean == pytest.approx((92.0 + 81.0) / 2)
    assert dataset.sd == pytest.approx((2.0 + c1.sd) / 2)  # mean of per-class SDs
    markdown = agg.render_markdown(report)
    assert "86.5±1.9 [2/10]" in markdown
    # The paper value for a subset is the mean over the same classes of Table 8.
    paper_subset = (91.0 + 98.9) / 2  # SD: (0.5 + 0.1) / 2
    assert f"({paper_subset:.1f}±0.3*; {86.5 - paper_subset:+.1f})" in markdown


def test_single_seed_has_no_sd(tmp_path):
    write_run(tmp_path, metrics={"pool.kde": 91.0})
    report = build(tmp_path)
    stat = report.per_category[("Contrastive", "KDE", "CIFAR-10", "0")]
    assert (stat.n, stat.sd) == (1, None)
    assert report.per_dataset[("Contrastive", "KDE", "CIFAR-10")].sd is None


def test_classifier_mapping_and_feature_switch(tmp_path):
    metrics = {
        "pool.locsvm": 1.5,
        "pool.kocsvm": 2.5,
        "pool.kde": 3.5,
        "pool.gde": 4.5,
        "pool.auc": 5.5,
        "embed.kde": 33.0,
        "dscore.auc": 66.0,
        "logit.auc": 77.0,
    }
    write_run(tmp_path, method="rotation", metrics=metrics)
    report = build(tmp_path)
    got = {clf: s.mean for (_, clf, _, _), s in report.per_category.items()}
    assert got == {
        "OC-SVM linear": 1.5,
        "OC-SVM kernel": 2.5,
        "KDE": 3.5,
        "GDE": 4.5,
        "1-NN": 5.5,
        "Rotation classifier": 66.0,
    }
    embed = build(tmp_path, feature="embed")
    got = {clf: s.mean for (_, clf, _, _), s in embed.per_category.items()}
    assert got == {"KDE": 33.0, "Rotation classifier": 66.0}
    with pytest.raises(ValueError, match="feature"):
        build(tmp_path, feature="logits")


def write_full_set(root, skip=None, seeds=(1,)):
    for dataset, (categories, value) in FULL_TASKS.items():
        for category in categories:
            if (dataset, category) == skip:
                continue
            for seed in seeds:
                metrics = {"pool.kocsvm": value + seed}
                write_run(root, "contrastive", dataset, category, seed, metrics, distaug="rot")


def test_43_task_weighted_mean_only_when_complete(tmp_path):
    write_full_set(tmp_path / "full", seeds=(1, 2))
    report = build(tmp_path / "full")
    mean, tasks = report.task_mean[("Contrastive (DA)", "OC-SVM kernel")]
    expected = (10 * 90 + 20 * 80 + 10 * 95 + 2 * 85 + 1 * 70) / 43 + 1.5
    assert tasks == 43
    assert mean == pytest.approx(expected)
    assert mean != pytest.approx((90 + 80 + 95 + 85 + 70) / 5 + 1.5)  # not the column mean
    markdown = agg.render_markdown(report)
    assert f"{expected:.1f} (89.9; {expected - 89.9:+.1f})" in markdown
    summary = csv_rows(agg.render_summary_csv(report))
    (row,) = [r for r in summary if r["level"] == "mean43"]
    assert float(row["mean"]) == pytest.approx(expected, abs=1e-4)
    assert float(row["paper_mean"]) == 89.9

    write_full_set(tmp_path / "partial", skip=("cifar20ood", "7"))
    partial = build(tmp_path / "partial")
    assert partial.task_mean[("Contrastive (DA)", "OC-SVM kernel")] == (None, 42)
    assert "n/a (42/43 tasks)" in agg.render_markdown(partial)


def test_task_weighted_mean_reproduces_paper_mean():
    row = paper.TABLE7[("Contrastive (DA)", "OC-SVM kernel")]
    means = {d: row[d][0] for d in paper.DATASETS}
    assert agg.task_weighted_mean(means) == pytest.approx(89.92, abs=0.01)
    with pytest.raises(ValueError, match="CelebA"):
        agg.task_weighted_mean({d: 1.0 for d in paper.DATASETS[:4]})


def test_missing_runs_are_reported_with_expected_seeds(tmp_path):
    write_run(tmp_path, dataset="dogvscatood", category="0", seed=1)
    write_run(tmp_path, dataset="dogvscatood", category="0", seed=2)
    write_run(tmp_path, dataset="dogvscatood", category="1", seed=1)
    report = build(tmp_path, expected_seeds=[1, 2, 3])
    got = {(m.dataset.label, m.category, m.seed) for m in report.missing}
    assert got == {
        ("Cat-vs-Dog", "0", 3),
        ("Cat-vs-Dog", "1", 2),
        ("Cat-vs-Dog", "1", 3),
    }
    markdown = agg.render_markdown(report)
    assert "**Contrastive / Cat-vs-Dog**: 3 run(s) missing" in markdown
    assert "  - 1 dog: seeds 2, 3" in markdown
    # Without --seeds the expected seeds are the ones seen for the (representation, dataset).
    inferred = build(tmp_path)
    assert {(m.category, m.seed) for m in inferred.missing} == {("1", 2)}
    # Whole classes and whole datasets that never ran are listed too.
    wider = build(tmp_path, expected_seeds=[1], expected_datasets=["celeba"])
    assert {(m.dataset.label, m.category) for m in wider.missing} == {
        ("CelebA eyeglasses", "Eyeglasses")
    }
    write_run(tmp_path, dataset="cifar10ood", category="4", seed=1)
    cifar = [
        m for m in build(tmp_path, expected_seeds=[1]).missing if m.dataset.label == "CIFAR-10"
    ]
    assert sorted(m.category for m in cifar) == ["0", "1", "2", "3", "5", "6", "7", "8", "9"]


def test_unfinished_runs_are_listed(tmp_path):
    write_run(tmp_path, category="0", seed=1)
    pending = write_run(tmp_path, category="0", seed=2, finished=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    halted = write_run(tmp_path, category="1", seed=1)
    summary = json.loads((halted / "summary.json").read_text())
    summary["run"]["complete"] = False
    (halted / "summary.json").write_text(json.dumps(summary))

    report = build(tmp_path, expected_seeds=[1, 2])
    reasons = {u.path: u.reason for u in report.unfinished}
    assert reasons[str(pending)] == "no summary.json"
    assert "unreadable" in reasons[str(broken)]
    assert "complete=false" in reasons[str(halted)]
    assert len(report.runs) == 1
    gap = [m for m in report.missing if (m.category, m.seed) == ("0", 2)]
    assert gap[0].unfinished_path == str(pending)
    markdown = agg.render_markdown(report)
    assert f"- `{pending}`: no summary.json (Contrastive, CIFAR-10, c0, s2)" in markdown
    assert "seeds 2 (unfinished: 2)" in markdown


def test_paper_columns_and_difference_in_csv(tmp_path):
    write_run(tmp_path, category="0", seed=1, metrics={"pool.kocsvm": 95.0}, distaug="rot")
    write_run(tmp_path, category="0", seed=2, metrics={"pool.kocsvm": 93.0}, distaug="rot")
    write_run(tmp_path, method="denoising", metrics={"pool.locsvm": 60.0})
    report = build(tmp_path)
    rows = csv_rows(agg.render_csv(report))
    assert list(rows[0]) == [
        "representation",
        "classifier",
        "metric",
        "dataset",
        "category",
        "category_name",
        "seed",
        "auroc",
        "paper_mean",
        "paper_sd",
        "diff",
        "run_dir",
    ]
    da = [r for r in rows if r["representation"] == "Contrastive (DA)"]
    assert [r["seed"] for r in da] == ["1", "2"]
    assert da[0]["category_name"] == "airplane"
    assert float(da[0]["paper_mean"]) == 90.9
    assert float(da[0]["paper_sd"]) == 0.5
    assert float(da[0]["diff"]) == pytest.approx(95.0 - 90.9)
    (linear,) = [r for r in rows if r["representation"] == "Denoising"]
    assert linear["paper_mean"] == linear["diff"] == ""  # Tables 8-11 give no linear OC-SVM
    summary = csv_rows(agg.render_summary_csv(report))
    (cat,) = [r for r in summary if r["level"] == "category" and r["classifier"] == "OC-SVM kernel"]
    assert float(cat["mean"]) == 94.0
    assert float(cat["sd"]) == pytest.approx(statistics.stdev([95.0, 93.0]), abs=1e-4)
    assert float(cat["diff"]) == pytest.approx(94.0 - 90.9)
    assert "94.0±1.4 (90.9±0.5; +3.1)" in agg.render_markdown(report)


def test_duplicates_are_warned_and_where_filters(tmp_path):
    write_run(tmp_path / "a", metrics={"pool.kde": 90.0})
    write_run(tmp_path / "b", metrics={"pool.kde": 50.0}, num_epoch=16)
    report = build(tmp_path)
    assert report.per_category[("Contrastive", "KDE", "CIFAR-10", "0")].mean == 90.0
    assert any("duplicate run" in w for w in report.warnings)
    runs, _, warnings = agg.scan_runs([str(tmp_path)], where=[("num_epoch", "16")])
    assert [r.metrics["pool.kde"] for r in runs] == [50.0]
    assert "1 run folder(s) excluded by --where" in warnings


def test_reference_layout_and_fraction_warning(tmp_path):
    stats = tmp_path / "ref_run" / "stats"
    stats.mkdir(parents=True)
    (stats / "summary.json").write_text(json.dumps({"pool.kde": 0.9, "embed.kde": 0.8}))
    hparams = {"method": "UnsupEmbed", "dataset": "cifar10ood", "category": "3", "seed": 2}
    (stats / "hparams.json").write_text(json.dumps(hparams))
    report = build(tmp_path)
    (run,) = report.runs
    assert (run.path, run.representation, run.category, run.seed) == (
        str(tmp_path / "ref_run"),
        "Rotation prediction",
        "3",
        2,
    )
    assert any("expected AUROC x 100" in w for w in report.warnings)


def test_cli_writes_atomically_and_reports(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, seed=1, metrics={"pool.kde": 90.0})
    write_run(runs, seed=2, finished=False)
    prefix = tmp_path / "results" / "xyz"
    note = "Data: CIFAR-10, JPEG q75 copy."
    assert agg.main([str(runs), "--out", str(prefix), "--seeds", "1 2", "--note", note]) == 0
    names = sorted(os.listdir(prefix.parent))
    assert names == ["xyz.csv", "xyz.md", "xyz_summary.csv"]  # no temp files left behind
    table = (prefix.parent / "xyz.md").read_text()
    assert "## Unfinished runs" in table
    assert table.index(note) < table.index("## Representation x classifier")
    assert str(tmp_path) not in table  # results carry no absolute machine paths
    assert "1 finished, 1 unfinished, 19 missing" in capsys.readouterr().err  # 10 classes x 2

    assert agg.main([str(runs), "--strict"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("# One-class AUROC (pool features)")
    assert "| Contrastive | KDE | 90.0 [1/10]" in out
    assert agg.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert agg.main([str(runs), "--where", "novalue"]) == 2
    assert agg.main([str(runs), "--seeds", "1 x"]) == 2


def test_write_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "t.md"
    droc_io.write_text(str(path), "old\n" * 100)
    droc_io.write_text(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["t.md"]


def test_script_shim_runs(tmp_path):
    write_run(tmp_path / "runs", metrics={"pool.kde": 90.0})
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "aggregate.py"), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert "## Per class: CIFAR-10" in result.stdout


# ----------------------------------------------------------------------------- paper numbers


def test_paper_per_class_tables_match_their_mean_rows():
    for dataset, columns in paper.PER_CLASS.items():
        assert len(paper.CATEGORY_NAMES[dataset]) == paper.TASK_WEIGHTS[dataset]
        for key, values in columns.items():
            assert len(values) == paper.TASK_WEIGHTS[dataset]
            mean, sd = paper.PER_CLASS_MEAN_ROWS[dataset][key]
            assert statistics.fmean(v[0] for v in values) == pytest.approx(mean, abs=0.061)
            # The printed SD is the mean of the per-class SDs (our category_average convention).
            assert statistics.fmean(v[1] for v in values) == pytest.approx(sd, abs=0.061)


def test_paper_table7_consistent_with_per_class_and_43_task_mean():
    known_mismatch = {("Denoising", "f-MNIST"), ("Denoising", "Cat-vs-Dog")}
    for dataset, rows in paper.PER_CLASS_MEAN_ROWS.items():
        for (rep, clf), (mean, _) in rows.items():
            table7 = paper.dataset_value(rep, clf, dataset)[0]
            if (rep, dataset) in known_mismatch:
                assert abs(table7 - mean) > 1.0
            else:
                assert table7 == pytest.approx(mean, abs=0.051), (rep, clf, dataset)
    for (rep, clf), row in paper.TABLE7.items():
        weighted = agg.task_weighted_mean({d: row[d][0] for d in paper.DATASETS})
        tol = 0.3 if rep == "ResNet-50 (ImageNet)" and clf != "OC-SVM linear" else 0.1
        assert weighted == pytest.approx(row["Mean"][0], abs=tol), (rep, clf)
    assert paper.NUM_TASKS == 43
    assert paper.class_value("Contrastive (DA)", "GDE", "CelebA eyeglasses", 0) == (90.6, 0.4)
    assert paper.class_value("RotNet", "KDE", "CIFAR-100 (20)", 19) == (90.3, 0.3)
    assert paper.class_value("RotNet", "KDE", "CIFAR-100 (20)", 20) is None
