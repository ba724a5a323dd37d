"""The plug-in catalog's contract.

(a) Every method the catalog describes, on its task, goes through a run's whole life: a tiny
    training run, re-evaluation, the ``Detector`` (patch-level runs: ``PatchDetector``),
    scoring, a SavedModel export that reproduces the detector's scores, and the run's report.
(b) A method, a dataset and a scorer, each written as ONE file into a temporary folder and made
    visible by ``DROC_PLUGINS``, appear in ``--help``, train and evaluate, show in the run's
    report, in ``aggregate``'s tables and in ``score``'s CSV, with no other edit.
(c) Reading the catalog imports neither TensorFlow nor any plug-in.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import conftest
import numpy as np
import pytest
from PIL import Image

from deep_representation_one_class import catalog, resolve
from deep_representation_one_class.datasets import DATASETS
from deep_representation_one_class.methods import METHODS
from deep_representation_one_class.reports import run_records

REPO = str(pathlib.Path(__file__).resolve().parents[2])
PKG = "deep_representation_one_class"


def _task_of(entry: catalog.Entry) -> str:
    """A method's task: that of a dataset which makes it its default method, else image."""
    for d in catalog.entries("dataset"):
        if d.method == entry.name:
            return d.task
    return "image"


# Methods on pretrained features (frozen, or fine-tuned by default) build an ImageNet backbone:
# slower.
_CASES = [
    pytest.param(
        e.name,
        _task_of(e),
        id=f"{e.name}-{_task_of(e)}",
        marks=[pytest.mark.slow]
        if e.fixed.get("train_steps") == 0 or e.defaults.get("backbone", "resnet18") != "resnet18"
        else [],
    )
    for e in catalog.entries("method")
]


def _mvtec_tree(root) -> str:
    """A tiny MVTec-layout category: flat gray surfaces, test defects are dark squares."""
    rng = np.random.default_rng(0)

    def save(path, arr):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(arr).save(path)

    def surface():
        return np.clip(rng.normal(150, 12, (48, 48)), 0, 255).astype(np.uint8)

    part = os.path.join(root, "part")
    for i in range(12):
        save(os.path.join(part, "train", "good", f"{i:02d}.png"), surface())
    for i in range(4):
        save(os.path.join(part, "test", "good", f"{i:02d}.png"), surface())
        img, mask = surface(), np.zeros((48, 48), np.uint8)
        img[10:22, 14:26], mask[10:22, 14:26] = 20, 255
        save(os.path.join(part, "test", "dent", f"{i:02d}.png"), img)
        save(os.path.join(part, "ground_truth", "dent", f"{i:02d}_mask.png"), mask)
    return str(root)


def _config(method: str, task: str, tmp_path):
    heads = (16, 8) if METHODS.get(method).defaults.get("head_dims") else ()
    tiny = dict(strategy="default", model_dir=str(tmp_path / "run"), report=True, head_dims=heads)
    if task == "patches":
        tiny.update(
            dataset="mvtec",
            category="part",
            root=_mvtec_tree(tmp_path / "data"),
            input_shape=(48, 48, 1),
            cache_dir="",
            patch_size=16,
            patch_stride=8,
            patch_bank=200,
            baselines=False,
            synthetic_holdout=0,
            train_steps=4,
            num_epoch=1,
        )
    if METHODS.get(method).fixed.get("train_steps") == 0:
        # Frozen pretrained features: the offline EfficientNet-Lite0 at its smallest input.
        tiny.update(backbone="efficientnet_lite0", pretrained_size=32, num_epoch=0, train_steps=0)
    return conftest.tiny_config(method, **tiny)


@pytest.mark.parametrize("method,task", _CASES)
def test_every_method_lives_a_whole_run(method, task, tmp_path):
    import tensorflow as tf

    from deep_representation_one_class.serving import export
    from deep_representation_one_class.serving.detector import Detector
    from deep_representation_one_class.training import build, rescore, runner

    cfg = _config(method, task, tmp_path)
    run = cfg.model_dir
    result = runner.run(cfg)
    assert result.status == "complete"
    assert build.task_for(cfg).name == task
    plain = {k: v for k, v in result.metrics.items() if k.count(".") == 1}
    assert plain and all(np.isfinite(v) and 0 <= v <= 100 for v in plain.values()), plain

    # Re-evaluation (patch runs keep no features: from the checkpoint) gives the numbers back.
    again = rescore.evaluate_run(run, reextract=task == "patches")
    for key, value in plain.items():
        assert again[key] == pytest.approx(value, abs=1e-4), key

    det = Detector.load(run)
    assert det.config.method == method
    if task == "patches":
        test_dir = os.path.join(cfg.root, "part", "test")
        images = [
            np.asarray(Image.open(os.path.join(test_dir, d, f)))
            for d in sorted(os.listdir(test_dir))
            for f in sorted(os.listdir(os.path.join(test_dir, d)))
        ]
        scores = det.score(images)
        maps = det.anomaly_map(images[:1])
        assert maps[0].shape == images[0].shape[:2]
    else:
        images = build.load_data(cfg).test_x[:6]
        scores = det.score(images)
    assert set(scores) == set(det.classifiers)
    for name, s in scores.items():
        assert s.shape == (len(images),) and np.all(np.isfinite(s)), name

    out = export.export_saved_model(run, str(tmp_path / "export"))
    served = tf.saved_model.load(out)
    if task == "image":
        got = {k: v.numpy() for k, v in served.serve(tf.constant(images)).items()}
        exported = export.DEFAULT_CLASSIFIERS
        want = Detector.load(run, [c for c in exported if c in cfg.classifiers]).score(images)
        for name, s in want.items():
            np.testing.assert_allclose(got[name], s, rtol=1e-4, atol=1e-6)
    with open(os.path.join(out, export.EXPORT_INFO)) as f:
        assert json.load(f)["classifiers"]

    with open(os.path.join(run, "report.html"), encoding="utf-8") as f:
        page = f.read()
    assert method in page and cfg.classifiers[0] in page
    # The tables name the run by its description's label.
    with open(os.path.join(run, "config.json")) as f:
        label = run_records.representation_label(json.load(f))
    assert label == METHODS.get(method).table_label(cfg.to_dict()) or ", fine-tuned" in label


# ----------------------------------------------------------------------------- (b) plug-ins

TOY_METHOD = '''
"""A toy method: pulls the embeddings of two flipped views of an image together."""

import tensorflow as tf

from deep_representation_one_class.methods.base import Method
from deep_representation_one_class.registry import Option

PLUGIN = dict(
    kind="method",
    name="toy_method",
    aliases=["toymethod"],
    label="Toy representation",
    description="toy: agreement of two flipped views",
    defaults={
        "aug_list": "hflip,hflip",
        "aug_list_for_test": "",
        "head_dims": (8,),
        "latent_dim": 0,
        "batch_size": 8,
        "train_steps": 4,
    },
    options=[Option("toy_margin", 0.25, "Toy method: margin of the agreement loss (> 0).")],
    impl="ToyMethod",
)


class ToyMethod(Method):
    @classmethod
    def check_config(cls, config, num_views):
        if num_views != 2 or not config.toy_margin > 0:
            raise ValueError(f"toy_method needs 2 views and --toy_margin > 0")

    def per_example(self, model, views, training=True):
        b = tf.shape(views[0])[0]
        z = tf.math.l2_normalize(model(tf.concat(views, 0), training=training)["embeds"], 1)
        d = tf.reduce_sum(tf.square(z[:b] - z[b:]), axis=1)
        return tf.nn.relu(d - self.config.toy_margin) + 0.1 * d, tf.cast(d < 0.5, tf.float32)
'''

TOY_DATA = '''
"""A toy dataset: dark (0) and bright (1) noisy squares."""

import numpy as np

from deep_representation_one_class.datasets.base import SourceArrays

NAMES = ("dark", "bright")

PLUGIN = dict(
    kind="dataset",
    name="toy_data",
    label="Toy squares",
    description="toy: dark vs bright noisy squares, 2 classes",
    class_names=NAMES,
    defaults={"learning_rate": 0.05},
    impl="load",
)


def _make(rng, n, label, shape):
    return np.clip(rng.normal(60 + 130 * label, 25, (n, *shape)), 0, 255).astype(np.uint8)


def load(root, *, category, input_shape, seed=0, **_unused):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in input_shape)
    train = [_make(rng, 24, k, shape) for k in (0, 1)]
    test = [_make(rng, 8, k, shape) for k in (0, 1)]
    return SourceArrays(
        train_x=np.concatenate(train),
        train_y=np.repeat([0, 1], 24).astype(np.int64),
        test_x=np.concatenate(test),
        test_y=np.repeat([0, 1], 8).astype(np.int64),
        class_names=NAMES,
        inlier=int(category),
        category=category,
    )
'''

TOY_SCORER = '''
"""A toy scorer: squared distance to the mean of the normalised training features."""

import numpy as np

from deep_representation_one_class.evaluation.scorers.base import Scorer

PLUGIN = dict(
    kind="scorer",
    name="toy_center",
    description="toy: distance to the mean feature",
    tasks=["image"],
    default_for=["train", "export"],
    impl="CenterScorer",
)


class CenterScorer(Scorer):
    tf_state = ("center",)

    def _fit(self, train):
        self._center = train.mean(axis=0)

    def _score(self, test):
        return np.sum((test - self._center) ** 2, axis=1)

    def _state_keys(self):
        return ("center",)

    def _state(self):
        return {"center": self._center}

    def _set_state(self, state):
        self._center = np.asarray(state["center"], np.float64)

    @staticmethod
    def tf_score(state, feats):
        import tensorflow as tf

        z = tf.cast(feats, tf.float64)
        z = z / tf.maximum(tf.norm(z, axis=-1, keepdims=True), tf.constant(1e-12, tf.float64))
        return tf.reduce_sum(tf.square(z - state["center"]), axis=1)
'''


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """The three toy plug-in files and an environment that names them."""
    folder = tmp_path_factory.mktemp("plugins")
    paths = []
    for name, text in (
        ("toy_method", TOY_METHOD),
        ("toy_data", TOY_DATA),
        ("toy_scorer", TOY_SCORER),
    ):
        path = folder / f"{name}.py"
        path.write_text(textwrap.dedent(text).lstrip())
        paths.append(str(path))
    env = {**os.environ, catalog.ENV: ",".join(paths), "DROC_CACHE_DIR": str(folder / "cache")}
    return env


def _cli(env, *args, timeout=600):
    out = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow  # five command processes, about 35 s
def test_plugins_in_one_file_each_reach_every_command(plugin_env, tmp_path):
    helptext = _cli(plugin_env, "train_and_eval_loop.py", "--help")
    for word in ("--toy_margin", "toy_method", "toymethod", "toy_data", "toy_center"):
        assert word in helptext, word

    run = tmp_path / "runs" / "toy" / "c0"
    _cli(
        plugin_env,
        "train_and_eval_loop.py",
        "--method=toymethod",  # an alias from the description
        "--dataset=toy_data",
        "--category=bright",  # a class name from the description
        "--net_type=resnet10",
        "--net_width=0.0625",
        "--toy_margin=0.3",
        "--strategy=default",
        "--precision=float32",
        f"--model_dir={run}",
    )
    summary = json.loads((run / "summary.json").read_text())
    cfg, metrics = summary["config"], summary["metrics"]
    assert (cfg["method"], cfg["dataset"], cfg["category"]) == ("toy_method", "toy_data", "1")
    assert cfg["toy_margin"] == 0.3 and cfg["train_steps"] == 4 and cfg["learning_rate"] == 0.05
    assert "toy_center" in cfg["classifiers"]
    assert 0 <= metrics["pool.toy_center"] <= 100
    # The squares differ in brightness only: the toy scorer on pooled features separates them.
    assert metrics["pool.toy_center"] > 70, metrics

    page = (run / "report.html").read_text()
    assert "toy_method" in page and "toy_center" in page

    table = _cli(plugin_env, "-m", f"{PKG}.aggregate", str(tmp_path / "runs"))
    assert "Toy representation" in table and "Toy squares" in table, table

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for k, level in enumerate((60, 190)):
        pixels = np.clip(rng.normal(level, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{k}.png")
    csv_path = tmp_path / "scores.csv"
    _cli(
        plugin_env, "-m", f"{PKG}.score", f"--model_dir={run}", f"--images={images}",
        f"--out={csv_path}",
    )  # fmt: skip
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and any("toy_center" in col for col in rows[0]), rows[0]

    out = tmp_path / "export"
    _cli(plugin_env, "-m", f"{PKG}.export", f"--model_dir={run}", f"--out={out}")
    info = json.loads((out / "assets.extra" / "droc_export.json").read_text())
    assert "toy_center" in info["classifiers"]


def test_a_bad_plugin_description_is_one_line_naming_the_file(tmp_path, monkeypatch):
    bad = tmp_path / "bad_plugin.py"
    bad.write_text('import os\nPLUGIN = dict(kind="method", name="bad", impl="X", label=os.sep)\n')
    monkeypatch.setenv(catalog.ENV, str(bad))
    with pytest.raises(catalog.CatalogError, match=r"bad_plugin.py:2: PLUGIN: .*os"):
        catalog.entries()
    bad.write_text('PLUGIN = dict(kind="method", name="contrastive", impl="X")\n')
    with pytest.raises(catalog.CatalogError, match="described twice"):
        catalog.entries()
    bad.write_text('PLUGIN = dict(kind="methd", name="x", impl="X")\n')
    with pytest.raises(catalog.CatalogError, match="kind must be one of"):
        catalog.entries()
    monkeypatch.setenv(catalog.ENV, str(tmp_path / "missing.py"))
    with pytest.raises(catalog.CatalogError, match="is not a file"):
        catalog.entries()


# ----------------------------------------------------------------------------- (c) no TF


def test_reading_the_catalog_imports_neither_tensorflow_nor_a_plugin(plugin_env):
    code = (
        f"import sys, {PKG}.catalog as c\n"
        "found = c.entries(); c.option_owners(); c.default_scorers()\n"
        "print(len(found), ' '.join(sorted(sys.modules)))\n"
    )
    out = _cli(plugin_env, "-c", code).split()
    count, loaded = int(out[0]), set(out[1:])
    assert count == len(catalog.entries()) + 3  # the built-ins and the three toy files
    assert "tensorflow" not in loaded and "keras" not in loaded
    plugins = {e.impl.split(":")[0] for e in catalog.entries()}
    assert not plugins & loaded, plugins & loaded
    assert not {m for m in loaded if m.startswith("droc_plugin_")}


# ----------------------------------------------------------------------------- one source


def test_every_listed_fact_comes_from_the_descriptions():
    # Table columns and categories: the dataset descriptions.
    for e in catalog.entries("dataset"):
        spec, _ = run_records.dataset_spec(e.name, "")
        assert spec.label.startswith(e.table_label)
        spec = DATASETS.get(e.name)
        assert (spec.categories, tuple(spec.default_input_shape)) == (e.categories, e.input_shape)
        assert dict(spec.preprocessing) == dict(e.preprocessing)
    assert run_records.dataset_spec("fashion_mnistood", "3.0")[0].label == "f-MNIST"
    # Method classes carry their description; aliases resolve through the catalog.
    for e in catalog.entries("method"):
        cls = METHODS.get(e.name)
        assert (cls.name, dict(cls.defaults), cls.options) == (e.name, dict(e.defaults), e.options)
        for alias in e.aliases:
            assert METHODS.canonical(alias.upper()) == e.name
    # The default classifier lists: a run's, the export's and the patch task's.
    assert resolve.build(dataset="fake").classifiers == catalog.default_scorers("train")
    from deep_representation_one_class.serving import export
    from deep_representation_one_class.tasks import patch_dense

    assert catalog.default_scorers("export") == export.DEFAULT_CLASSIFIERS
    assert patch_dense.patch_scorers(("kocsvm",)) == catalog.default_scorers("patches")
    assert set(patch_dense.patch_scorers(("auc", "locsvm", "gde"))) == {"auc", "gde"}
    # CutPaste's static defaults are what its variant logic derives for the default variant.
    cut = METHODS.get("cutpaste")
    assert dict(cut.defaults_for({})) == dict(cut.defaults)


def test_sweep_categories_come_from_the_catalog():
    out = _cli(dict(os.environ), "-m", f"{PKG}.catalog", "categories", "cifar20ood")
    assert out.split() == [str(i) for i in range(20)]
    assert _cli(dict(os.environ), "-m", f"{PKG}.catalog", "categories", "celeba").split() == [
        "Eyeglasses"
    ]
