"""PANDA-style compactness fine-tuning of the frozen EfficientNet-Lite0 (CIFAR-10 validation).

A selection study (the test set is never read): does pulling a class's features towards their
mean (the compactness loss of PANDA, Reiss et al., CVPR 2021) make the pretrained features rank
that class's validation images better, within a CPU budget? To fit the budget only the top of
the network trains (blocks 11-15 and the head, BatchNorm frozen), on the stride-16 maps of the
training images and their mirror images, extracted once (128 px). After every epoch the
validation AUROC of GDE is measured on the four-layer mirror-averaged features (stride-16 map
unchanged, blocks 14, 15 and the head recomputed) and on the head alone. Same draw and splits
as ``scripts/pretrained_probe.py`` (1,000 images per class, seed 0; 90% of the class to train,
10% and the other classes to validate).

    python scripts/panda_probe.py --cifar_root=data/cifar10-jpeg-pickles --classes=3 \
        --plans=adam:1e-5,sgd:1e-5,sgd:1e-3 --epochs=3 \
        --table=results/selection/panda_cifar10.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import pretrained_probe as probe
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from deep_representation_one_class.evaluation.scorers.gde import GdeScorer
from deep_representation_one_class.models import efficientnet_lite as effnet
from deep_representation_one_class.utils import cpuinfo

SIDE = 128
TOP_OUTPUTS = ("b14", "b15", "head")


def stride16_maps(x: np.ndarray, net, path: str) -> np.ndarray:
    """[2, N, 8, 8, 112] float16: the stride-16 maps of ``x`` and of its mirror images."""
    if os.path.exists(path):
        return np.load(path)
    bottom = keras.Model(net.input, net.get_layer(effnet.POOL_TAPS["s16"]).output)

    @tf.function
    def maps(b):
        b = tf.image.resize(tf.cast(b, tf.float32) / 255.0, (SIDE, SIDE), method="bilinear")
        b = b * 2.0 - 1.0
        return bottom(tf.concat([b, b[:, :, ::-1]], 0), training=False)

    parts = []
    for s in range(0, len(x), 100):
        m = maps(x[s : s + 100]).numpy()
        parts.append(m.reshape(2, -1, *m.shape[1:]).astype(np.float16))
    out = np.concatenate(parts, axis=1)
    np.save(path + ".tmp.npy", out)
    os.replace(path + ".tmp.npy", path)
    return out


def top_of(net) -> keras.Model:
    """A trainable copy of the network from the stride-16 map to blocks 14, 15 and the head."""
    start = net.get_layer(effnet.POOL_TAPS["s16"]).output
    sub = keras.Model(start, [net.get_layer(effnet.POOL_TAPS[n]).output for n in TOP_OUTPUTS])
    top = keras.models.clone_model(sub)
    top.set_weights(sub.get_weights())
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return top


def pooled(top, maps: np.ndarray) -> list[np.ndarray]:
    """Mirror-averaged global averages of the top's outputs for every image."""
    outs = [[] for _ in TOP_OUTPUTS]
    for s in range(0, maps.shape[1], 500):
        batch = maps[:, s : s + 500]
        flat = tf.constant(batch.reshape(-1, *maps.shape[2:]).astype(np.float32))
        for acc, o in zip(outs, top(flat, training=False)):
            p = tf.reduce_mean(o, axis=[1, 2]).numpy()
            acc.append(p.reshape(2, -1, p.shape[-1]).mean(axis=0))
    return [np.concatenate(a) for a in outs]


def aucs(s16, tops, tr, te, labels) -> tuple[float, float]:
    def auc(parts):
        x = np.concatenate([probe.l2(p.astype(np.float64)) for p in parts], axis=1)
        return 100.0 * roc_auc_score(labels, GdeScorer().fit(x[tr]).score(x[te]))

    return auc([s16, *tops]), auc([tops[-1]])


def run_plan(net, maps, s16, y, c, optimizer: str, lr: float, epochs: int) -> list[tuple]:
    tr, te, labels = probe.split(y, c, 0)
    top = top_of(net)
    tops = pooled(top, maps)
    center = tf.constant(tops[-1][tr].mean(axis=0), tf.float32)
    rows = [(0, float("nan"), *aucs(s16, tops, tr, te, labels), 0.0)]
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=0.9)
    else:
        opt = keras.optimizers.Adam(lr)
    train = maps[:, tr].reshape(-1, *maps.shape[2:])

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            head = tf.reduce_mean(top(batch, training=True)[-1], axis=[1, 2])
            loss = tf.reduce_mean(tf.reduce_sum(tf.square(head - center), axis=-1))
        grads = tape.gradient(loss, top.trainable_variables)
        opt.apply_gradients(zip(grads, top.trainable_variables))
        return loss

    c0 = time.process_time()
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(train))
        for s in range(0, len(order) - 31, 32):
            loss = step(tf.constant(train[order[s : s + 32]].astype(np.float32)))
        tops = pooled(top, maps)
        rows.append(
            (epoch + 1, float(loss), *aucs(s16, tops, tr, te, labels), time.process_time() - c0)
        )
        print(f"class {c} {optimizer} {lr:g} epoch {epoch + 1}: {rows[-1]}", flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cifar_root", required=True)
    p.add_argument("--classes", default="3")
    p.add_argument("--plans", default="adam:1e-5,sgd:1e-5,sgd:1e-3")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--per_class", type=int, default=1000)
    p.add_argument("--out", default="runs/probe")
    p.add_argument("--table", default="")
    args = p.parse_args()
    x, y = probe.load_train(args.cifar_root)
    idx = probe.draw(y, args.per_class, 0)
    x, y = x[idx], y[idx]
    os.makedirs(args.out, exist_ok=True)
    net = effnet.pretrained_efficientnet_lite0()
    maps = stride16_maps(x, net, os.path.join(args.out, f"s16maps_{SIDE}_{args.per_class}_0.npy"))
    s16 = maps.astype(np.float32).mean(axis=(2, 3)).mean(axis=0)
    lines = [
        "# PANDA-style compactness fine-tuning of EfficientNet-Lite0 on CIFAR-10 validation splits",
        "",
        "Validation AUROC x 100 of GDE (the test set is not read), before (epoch 0) and after "
        "each epoch of fine-tuning blocks 11-15 and the head (BatchNorm frozen) towards the "
        "class's initial mean head feature, batch 32, on the training images and their mirror "
        "images at 128 px. Four layers: s16+b14+b15+head, mirror-averaged, as "
        "`--pretrained_layers=s16,b14,b15,head --flip_average`. Command: `python "
        f"scripts/panda_probe.py --cifar_root=data/cifar10-jpeg-pickles --classes={args.classes} "
        f"--plans={args.plans} --epochs={args.epochs}` (CIFAR-10, JPEG q75 copy). "
        f"Machine: {cpuinfo.machine_line()}.",
        "",
        "| class | optimizer | lr | epoch | loss | four layers | head | CPU-s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in [int(v) for v in args.classes.split(",")]:
        for plan in args.plans.split(","):
            optimizer, lr = plan.split(":")
            for epoch, loss, four, head, cpu in run_plan(
                net, maps, s16, y, c, optimizer, float(lr), args.epochs
            ):
                lines.append(
                    f"| {probe.NAMES[c]} | {optimizer} | {lr} | {epoch} | {loss:.1f} | "
                    f"{four:.2f} | {head:.2f} | {cpu:.0f} |"
                )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.table:
        with open(args.table + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.table + ".tmp", args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
