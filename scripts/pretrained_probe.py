"""Frozen-feature variants of the offline EfficientNet-Lite networks on a CIFAR-10 validation split.

A selection study, not a benchmark: which input side, which layers of the network, horizontal
flip averaging and which one-class scorer give the best *validation* AUROC on CIFAR-10
classes. The test set is never read. For every class c, ``--per_class`` training images of
each class are drawn (seeded); 90% of class c's are the one-class training set, its other 10%
the validation inliers, and the drawn images of the other nine classes the validation outliers.

Features are extracted once per side for all drawn images (and their mirror images) and
cached in ``--out``; every variant is then fitted per class. Layers: the global average of
``s8``/``s16`` (block outputs at strides 8 and 16), ``b14`` (stride-32 block 14), ``b15``
(the last block, 320 channels, before the head) and ``head`` (the 1280-channel head, what
``--method=imagenet`` uses). A combination L2-normalises each layer's pooled vector and
concatenates them. Scorers: the library's GDE and k-nearest-neighbour cosine distance (mean of
the k nearest, k = 1, 2, 5). ``--backbones`` compares networks: ``lite0``, ``lite2`` (in Lite2 the
layer names mean the same places: the last blocks at strides 8 and 16, the last block but one,
the last block, the head) and ``lite0+lite2`` (both networks' features concatenated).
``--ensembles`` scores with several networks and input sides at once, such as
``lite2@224+lite2@128+lite0@224``: one GDE per member (on the first ``--combos`` entry), each
member's scores standardised by the mean and SD of its own training inliers' scores, then summed.

    python scripts/pretrained_probe.py --cifar_root=data/cifar10-jpeg-pickles \
        --sides=128,224 --out=runs/probe --table=results/selection/pretrained_probe.md
    python scripts/pretrained_probe.py --cifar_root=data/cifar10-jpeg-pickles --sides=128 \
        --backbones=lite0,lite2,lite0+lite2 --combos=head,s16+b14+b15+head --scorers=gde \
        --table=results/selection/pretrained_probe_backbones.md
    python scripts/pretrained_probe.py --cifar_root=data/cifar10-jpeg-pickles --backbones= \
        --ensembles=lite2@224+lite2@128,lite2@224+lite2@128+lite0@224 \
        --combos=s16+b14+b15+head --table=results/selection/pretrained_probe_ensembles.md
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deep_representation_one_class.utils import allocator

allocator.ensure_fast_allocator(force=True)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from deep_representation_one_class.evaluation.scorers.gde import GdeScorer  # noqa: E402
from deep_representation_one_class.models import efficientnet_lite as effnet  # noqa: E402
from deep_representation_one_class.utils import cpuinfo  # noqa: E402

LAYERS = tuple(effnet.POOL_TAPS)
COMBOS = {
    "head": ("head",),
    "b15": ("b15",),
    "b14+b15+head": ("b14", "b15", "head"),
    "b15+head": ("b15", "head"),
    "s16+b14+b15+head": ("s16", "b14", "b15", "head"),
    "all": ("s8", "s16", "b14", "b15", "head"),
}
NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_train(root: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in range(1, 6):
        with open(os.path.join(root, "cifar-10-batches-py", f"data_batch_{i}"), "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(batch[b"labels"], np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def draw(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)]
        )
    )


def extract(
    images: np.ndarray, side: int, variant: str = "lite0", batch: int = 100
) -> dict[str, np.ndarray]:
    net = effnet.pretrained_efficientnet_lite0(variant=variant)
    taps = effnet.pool_taps(variant)
    probe = keras.Model(net.input, [net.get_layer(taps[n]).output for n in LAYERS])

    @tf.function(jit_compile=False)
    def pooled(x):
        x = tf.image.resize(tf.cast(x, tf.float32) / 255.0, (side, side), method="bilinear")
        x = x * 2.0 - 1.0
        outs = probe(tf.concat([x, x[:, :, ::-1]], 0), training=False)
        return [tf.reduce_mean(o, axis=[1, 2]) for o in outs]

    acc = {k: [] for k in LAYERS}
    for start in range(0, len(images), batch):
        outs = pooled(images[start : start + batch])
        for key, o in zip(LAYERS, outs):
            acc[key].append(o.numpy())
    feats = {}
    for key, parts in acc.items():
        both = np.concatenate([p.reshape(2, -1, p.shape[-1]) for p in parts], axis=1)
        feats[key] = both[0]
        feats[key + "_flip"] = both[1]
    return feats


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    sim = l2(test) @ l2(train).T
    top = -np.partition(-sim, k - 1, axis=1)[:, :k]
    return 1.0 - top.mean(axis=1)


def combo(feats, names, flip: bool) -> np.ndarray:
    parts = []
    for n in names:
        f = feats[n]
        if flip:
            f = 0.5 * (f + feats[n + "_flip"])
        parts.append(l2(f.astype(np.float64)))
    return np.concatenate(parts, axis=1)


def split(y: np.ndarray, c: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class ``c``'s validation split of the drawn images: (training inliers: 90% of the class;
    validation images: the other 10% and every other class; their labels, 1 = outlier)."""
    rng = np.random.default_rng(seed + 100 + c)
    inl = rng.permutation(np.flatnonzero(y == c))
    n_train = (9 * len(inl)) // 10
    val_in, val_out = inl[n_train:], np.flatnonzero(y != c)
    label = np.concatenate([np.zeros(len(val_in)), np.ones(len(val_out))])
    return inl[:n_train], np.concatenate([val_in, val_out]), label


def evaluate(feats: list[dict], y, seed: int, combos, scorers) -> list[dict]:
    """``feats``: one feature dict per network; a combination concatenates all of them."""
    rows = []
    for c in range(10):
        tr, test, label = split(y, c, seed)
        for cname in combos:
            names = COMBOS[cname]
            for flip in (False, True):
                x = np.concatenate([combo(f, names, flip) for f in feats], axis=1)
                scores = {}
                for sname in scorers:
                    if sname == "gde":
                        scores[sname] = GdeScorer().fit(x[tr]).score(x[test])
                    else:
                        scores[sname] = knn(x[tr], x[test], int(sname[3:]))
                for sname, s in scores.items():
                    rows.append(
                        dict(
                            cls=c,
                            layers=cname,
                            flip=flip,
                            scorer=sname,
                            auc=100.0 * roc_auc_score(label, s),
                        )
                    )
    return rows


def parse_ensemble(spec: str) -> list[tuple[str, int]]:
    """``lite2@224+lite0@128`` -> [("lite2", 224), ("lite0", 128)]; exits on a malformed member."""
    members = []
    for member in spec.split("+"):
        variant, _, side = member.partition("@")
        if variant not in effnet.VARIANTS or not side.isdigit():
            raise SystemExit(f"--ensembles: {member!r} is not VARIANT@SIDE, such as lite2@224")
        members.append((variant, int(side)))
    return members


def ensemble_rows(x, y, spec: str, args, timing) -> list[dict]:
    """Rows of one ensemble ``spec`` (``variant@side`` members joined by ``+``)."""
    members = [features(x, side, variant, args, timing) for variant, side in parse_ensemble(spec)]
    cname = args.combos.split(",")[0]
    # Each member's normalised features, built once for all classes.
    zs = {flip: [combo(f, COMBOS[cname], flip) for f in members] for flip in (False, True)}
    rows = []
    for c in range(10):
        tr, test, label = split(y, c, args.seed)
        for flip, members_z in zs.items():
            total = np.zeros(len(test))
            for z in members_z:
                gde = GdeScorer().fit(z[tr])
                fit = gde.score(z[tr])
                total += (gde.score(z[test]) - fit.mean()) / fit.std()
            rows.append(
                dict(
                    cls=c,
                    layers=cname,
                    flip=flip,
                    scorer="gde sum",
                    side="each",
                    backbone=spec,
                    auc=100.0 * roc_auc_score(label, total),
                )
            )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cifar_root", required=True)
    p.add_argument("--sides", default="128,224")
    p.add_argument("--per_class", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/probe")
    p.add_argument("--table", default="")
    p.add_argument("--combos", default=",".join(COMBOS), help="layer combinations to fit")
    p.add_argument("--scorers", default="gde,knn1,knn2,knn5")
    p.add_argument(
        "--backbones", default="lite0", help="lite0, lite2 and pairs such as lite0+lite2"
    )
    p.add_argument("--ensembles", default="", help="such as lite2@224+lite2@128,lite2@224")
    args = p.parse_args()
    for spec in filter(None, args.ensembles.split(",")):
        parse_ensemble(spec)  # every spec checked before the first extraction
    x, y = load_train(args.cifar_root)
    idx = draw(y, args.per_class, args.seed)
    x, y = x[idx], y[idx]
    os.makedirs(args.out, exist_ok=True)
    all_rows, timing = [], {}
    for side in [int(s) for s in args.sides.split(",")]:
        cache = {}
        for backbone in filter(None, args.backbones.split(",")):
            parts = backbone.split("+")
            for variant in parts:
                if variant not in cache:
                    cache[variant] = features(x, side, variant, args, timing)
            combos = args.combos.split(",")
            feats = [cache[v] for v in parts]
            for row in evaluate(feats, y, args.seed, combos, args.scorers.split(",")):
                row["side"], row["backbone"] = str(side), backbone
                all_rows.append(row)
    for spec in filter(None, args.ensembles.split(",")):
        all_rows.extend(ensemble_rows(x, y, spec, args, timing))
    summarize(all_rows, args, timing)
    return 0


def features(x, side: int, variant: str, args, timing) -> dict[str, np.ndarray]:
    """One network's pooled layers of ``x`` and of its mirror images (cached in ``--out``)."""
    tag = "" if variant == "lite0" else f"{variant}_"  # Lite0's files predate --backbones
    path = os.path.join(args.out, f"feats_{tag}{side}_{args.per_class}_{args.seed}.npz")
    if os.path.exists(path):
        feats = dict(np.load(path))
        if "seconds" in feats:  # (wall, CPU) of the extraction that wrote the cache
            timing[(variant, side)] = tuple(feats.pop("seconds"))
        return feats
    t0, c0 = time.time(), time.process_time()
    feats = extract(x, side, variant)
    timing[(variant, side)] = (time.time() - t0, time.process_time() - c0)
    np.savez(path + ".tmp.npz", seconds=np.asarray(timing[(variant, side)]), **feats)
    os.replace(path + ".tmp.npz", path)
    print(
        f"{variant} at {side} px: {len(x)} images x 2 (flip) in "
        f"{timing[(variant, side)][0]:.0f} s wall, {timing[(variant, side)][1]:.0f} CPU-s",
        flush=True,
    )
    return feats


def summarize(rows, args, timing) -> None:
    fields = ("backbone", "side", "layers", "flip", "scorer")
    keys = sorted({tuple(r[f] for f in fields) for r in rows})
    table = []
    for key in keys:
        aucs = [r["auc"] for r in rows if tuple(r[f] for f in fields) == key]
        table.append((float(np.mean(aucs)), key, aucs))
    table.sort(key=lambda t: -t[0])
    lines = [
        "# Frozen EfficientNet-Lite variants on a CIFAR-10 validation split",
        "",
        f"Validation AUROC x 100 (the test set is not read): {args.per_class} training images "
        "per class drawn (seed "
        f"{args.seed}); per class, 90% of its own as training inliers, 10% as validation "
        "inliers, the other classes' drawn images as validation outliers. Command: "
        f"`python scripts/pretrained_probe.py --cifar_root=data/cifar10-jpeg-pickles "
        f"--sides={args.sides} --per_class={args.per_class} --combos={args.combos} "
        f"--scorers={args.scorers} --backbones={args.backbones}"
        + (f" --ensembles={args.ensembles}" if args.ensembles else "")
        + "` (CIFAR-10, JPEG q75 copy). A pair (lite0+lite2) concatenates both networks' "
        "features; an ensemble (`+` of `network@side`) sums its members' GDE scores, each "
        "standardised by its training inliers' scores (side `each`).",
        *(
            f"Extracting the {10 * args.per_class:,} drawn images and their mirror images with "
            f"{variant} took {cpu:.0f} CPU-seconds at {side} px (float32)."
            for (variant, side), (_, cpu) in timing.items()
        ),
        f"Machine: {cpuinfo.machine_line()}.",
        "",
        "| backbone | side | layers | flip avg | scorer | " + " | ".join(NAMES) + " | mean |",
        "|---|---|---|---|---|" + "---|" * 11,
    ]
    for mean, (backbone, side, layers, flip, scorer), aucs in table:
        cells = " | ".join(f"{a:.1f}" for a in aucs)
        lines.append(
            f"| {backbone} | {side} | {layers} | {'yes' if flip else 'no'} | {scorer} | {cells} "
            f"| {mean:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print("\n".join(lines[:20]))
    if args.table:
        tmp = args.table + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.table)


if __name__ == "__main__":
    sys.exit(main())
