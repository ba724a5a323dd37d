"""CelebA attribute tasks (``celeba``) at 64x64x3: inliers are faces *without* the attribute.

Sources, in order, in ``root`` (or ``root/celeba``): the prepared ``celeba_npy/`` written by
``scripts/prepare_celeba.py`` (``{train,test}/image_64x64.npy``, ``attr.npy`` and
``attr_names.json``); the original release (``img_align_celeba/`` folder or
``img_align_celeba.zip``, ``list_attr_celeba.txt``, ``list_eval_partition.txt``); a TFDS
``data_dir`` with a prepared ``celeb_a/``. Decoded raw/TFDS images are cached.
Reference behaviour: crop rows 40:-20 and columns 10:-10 of the 218x178 aligned face
(158x158), resize to 64x64 bicubic; train = standard partition 0, test = partition 2 (the
whole test split, label 1 if the attribute is present).
Fix of reference bug: the reference wrote the ``attr.npy`` columns in ``frozenset`` order
(random per process) and read them in list order; here the columns follow the fixed list of
the CelebA release and the prepared folder records it in ``attr_names.json``. The validation
mode works too (outliers are training faces with the attribute).
"""

from __future__ import annotations

import io as _io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from deep_representation_one_class.datasets import images
from deep_representation_one_class.datasets.base import (
    DataError,
    SourceArrays,
)
from deep_representation_one_class.datasets.cache import (
    cached_arrays,
    fingerprint,
    tfds_batches,
)
from deep_representation_one_class.utils import io

# The 40 attributes in the column order of list_attr_celeba.txt (and of TFDS celeb_a).
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
    "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
NATIVE_SHAPE = (64, 64, 3)
PLUGIN = dict(
    kind="dataset",
    name="celeba",
    label="CelebA",
    description="CelebA, inliers = faces without the attribute (e.g. Eyeglasses), 64x64x3",
    categories=ATTRIBUTES,
    # The paper's column is Eyeglasses; other attributes get a table column each.
    table_categories=("Eyeglasses",),
    input_shape=NATIVE_SHAPE,
    # crop_face's margins (left, top, right, bottom), then a bicubic resize.
    preprocessing={"crop": (10, 40, 10, 20), "resample": "bicubic"},
    impl="_load",
)
SPLITS = {"train": 0, "test": 2}  # list_eval_partition.txt: 0 train, 1 validation, 2 test
_CHUNK = 1024


def crop_face(img: Image.Image) -> Image.Image:
    """Rows 40:-20 and columns 10:-10 (218x178 -> 158x158), relative to the image's own size."""
    return img.crop((10, 40, img.width - 10, img.height - 20))


def _decode_many(items, input_shape) -> np.ndarray:
    def decode(item):
        name, src = item
        return images.decode_image(
            src, input_shape, name=name, resample="bicubic", transform=crop_face
        )

    out = images.map_threaded(decode, items)
    return np.stack(out) if out else np.zeros((0, *input_shape), np.uint8)


def _read_attr_file(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """(attribute names, {file name: [40] uint8 flags}) from list_attr_celeba.txt."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DataError(f"{path} is too short: expected a count line and an attribute-name line")
    names = lines[1].split()
    rows = {}
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DataError(
                f"{path}: line '{line[:40]}...' has {len(parts) - 1} values, expected {len(names)}"
            )
        rows[parts[0]] = (np.array(parts[1:], dtype=np.int64) > 0).astype(np.uint8)
    return names, rows


def _read_partition(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = int(parts[1])
    return out


def _find_raw(base: Path) -> dict[str, Path] | None:
    attr, part = base / "list_attr_celeba.txt", base / "list_eval_partition.txt"
    if not (attr.is_file() and part.is_file()):
        return None
    for images_src in (base / "img_align_celeba", base / "img_align_celeba.zip"):
        if images_src.exists():
            return {"attr": attr, "partition": part, "images": images_src}
    return None


def _decode_raw(src: dict[str, Path], input_shape) -> dict[str, np.ndarray]:
    attr_names, attrs = _read_attr_file(src["attr"])
    partition = _read_partition(src["partition"])
    out: dict[str, np.ndarray] = {"attr_names": np.array(attr_names)}
    zf = zipfile.ZipFile(src["images"]) if src["images"].is_file() else None
    try:
        members = {}
        if zf is not None:
            members = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        for split, code in SPLITS.items():
            names = sorted(n for n, p in partition.items() if p == code)
            missing = [n for n in names if n not in attrs]
            if missing:
                raise DataError(f"{src['attr']} has no attributes for {missing[0]}")
            chunks = []
            for start in range(0, len(names), _CHUNK):
                part = names[start : start + _CHUNK]
                if zf is None:
                    items = [(str(src["images"] / n),) * 2 for n in part]
                else:
                    if any(n not in members for n in part):
                        bad = next(n for n in part if n not in members)
                        raise DataError(f"{src['images']} has no image {bad}")
                    items = [(f"{src['images']}:{n}", zf.read(members[n])) for n in part]
                chunks.append(_decode_many(items, input_shape))
            out[f"{split}_x"] = (
                np.concatenate(chunks) if chunks else np.zeros((0, *input_shape), np.uint8)
            )
            out[f"{split}_attr"] = (
                np.stack([attrs[n] for n in names])
                if names
                else np.zeros((0, len(attr_names)), np.uint8)
            )
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"cannot read CelebA images in {src['images']}: {e}") from None
    finally:
        if zf is not None:
            zf.close()
    return out


def _decode_tfds(data_dir: Path, input_shape) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"attr_names": np.array(ATTRIBUTES)}
    for split in SPLITS:
        xs, attrs = [], []
        for batch in tfds_batches("celeb_a", data_dir, split, batch_size=256):
            xs.append(
                np.stack(
                    [
                        images.pil_to_array(crop_face(Image.fromarray(im)), input_shape, "bicubic")
                        for im in batch["image"]
                    ]
                )
            )
            attrs.append(np.stack([batch["attributes"][a] for a in ATTRIBUTES], 1))
        out[f"{split}_x"] = np.concatenate(xs) if xs else np.zeros((0, *input_shape), np.uint8)
        out[f"{split}_attr"] = (
            np.concatenate(attrs).astype(np.uint8) if attrs else np.zeros((0, 40), np.uint8)
        )
    return out


def _load_prepared(folder: Path, input_shape) -> dict[str, np.ndarray]:
    names_file = folder / "attr_names.json"
    if not names_file.is_file():
        raise DataError(
            f"{names_file} is missing, so the column order of attr.npy is unknown (the "
            "reference's prepare script wrote it in random order); re-run "
            "scripts/prepare_celeba.py"
        )
    names = io.read_json(str(names_file), expect=list)
    out: dict[str, np.ndarray] = {"attr_names": np.array([str(n) for n in names], dtype=str)}
    h, w, _ = input_shape
    for split in SPLITS:
        sub = folder / split
        exact = sub / f"image_{h}x{w}.npy"
        img_file = exact if exact.is_file() else sub / "image_64x64.npy"
        try:
            x = np.load(img_file, mmap_mode="r", allow_pickle=False)
            attr = np.load(sub / "attr.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read prepared CelebA arrays in {sub}: {e}") from None
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
            raise DataError(
                f"{img_file} holds {x.dtype} {x.shape}, expected uint8 [N, H, W, C] images; "
                "re-run scripts/prepare_celeba.py"
            )
        if attr.ndim != 2 or len(attr) != len(x) or attr.shape[1] != len(out["attr_names"]):
            raise DataError(
                f"{sub / 'attr.npy'} has shape {attr.shape}, expected [{len(x)}, "
                f"{len(out['attr_names'])}] (one row per image of {img_file.name}); re-run "
                "scripts/prepare_celeba.py"
            )
        out[f"{split}_x"] = images.resize_images(np.asarray(x), input_shape, "bicubic")
        out[f"{split}_attr"] = (np.asarray(attr) > 0).astype(np.uint8)
    return out


def _schema(input_shape) -> dict[str, tuple[str, tuple]]:
    h, w, c = (int(v) for v in input_shape)
    return {
        "attr_names": ("str", ("a",)),
        "train_x": ("uint8", ("n", h, w, c)),
        "train_attr": ("uint8", ("n", "a")),
        "test_x": ("uint8", ("t", h, w, c)),
        "test_attr": ("uint8", ("t", "a")),
    }


def load_arrays(root, input_shape=NATIVE_SHAPE, cache_dir=None) -> dict[str, np.ndarray]:
    """{'train_x', 'test_x': [N,H,W,C] uint8, 'train_attr', 'test_attr': [N,A] uint8 0/1,
    'attr_names': [A] str} from the first source found under ``root``.
    """
    if root is None:
        raise DataError(
            "celeba needs root=<folder with celeba_npy/ (scripts/prepare_celeba.py), or "
            "img_align_celeba/ + list_attr_celeba.txt + list_eval_partition.txt, or a TFDS "
            "data_dir with celeb_a/>"
        )
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"CelebA root {base} is not a directory")
    shape_tag = "x".join(map(str, input_shape))
    for folder in (base, base / "celeba"):
        for prepared in (folder / "celeba_npy", folder):
            if (prepared / "train" / "attr.npy").is_file():
                return _load_prepared(prepared, input_shape)
        raw = _find_raw(folder)
        if raw is not None:
            img = raw["images"]
            files = [*img.iterdir()] if img.is_dir() else [img]
            key = fingerprint([*files, raw["attr"], raw["partition"]], "celeba", input_shape)
            return cached_arrays(
                cache_dir,
                f"celeba-{shape_tag}",
                key,
                lambda raw=raw: _decode_raw(raw, input_shape),
                _schema(input_shape),
            )
    if (base / "celeb_a").is_dir():
        files = [p for p in (base / "celeb_a").rglob("*") if p.is_file()]
        key = fingerprint(files, "celeba-tfds", input_shape)
        return cached_arrays(
            cache_dir,
            f"celeba-tfds-{shape_tag}",
            key,
            lambda: _decode_tfds(base, input_shape),
            _schema(input_shape),
        )
    raise DataError(
        f"no CelebA data in {base}: expected celeba_npy/{{train,test}}/image_64x64.npy + "
        "attr.npy + attr_names.json, or img_align_celeba/ + list_attr_celeba.txt + "
        "list_eval_partition.txt, or a TFDS data_dir with celeb_a/"
    )


def _load(root, *, category, input_shape, cache_dir=None, **_unused) -> SourceArrays:
    arrays = load_arrays(root, input_shape, cache_dir)
    names = [str(n).lower() for n in arrays["attr_names"]]
    if category.lower() not in names:
        raise DataError(
            f"attribute '{category}' is not in the CelebA attribute list of {root}; "
            f"available: {', '.join(map(str, arrays['attr_names']))}"
        )
    col = names.index(category.lower())
    return SourceArrays(
        train_x=arrays["train_x"],
        train_y=arrays["train_attr"][:, col].astype(np.int64),
        test_x=arrays["test_x"],
        test_y=arrays["test_attr"][:, col].astype(np.int64),
        class_names=(f"not_{category}", category),
        inlier=0,  # the inliers are the faces WITHOUT the attribute
        category=category,
    )


def prepare_npy(root: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Writes ``out_dir/{train,test}/image_64x64.npy, attr.npy`` and ``out_dir/attr_names.json``.

    Every file is written to a temporary name and renamed into place; ``attr_names.json`` is
    written last, so a folder without it is an unfinished preparation.

    Args:
      root: the raw CelebA release folder (or a TFDS data_dir with celeb_a/).
      out_dir: the output folder, usually ``<data dir>/celeba_npy``.
    """
    base = Path(root).expanduser()
    raw = _find_raw(base)
    if raw is not None:
        arrays = _decode_raw(raw, NATIVE_SHAPE)
    elif (base / "celeb_a").is_dir():
        arrays = _decode_tfds(base, NATIVE_SHAPE)
    else:
        raise DataError(
            f"no raw CelebA in {base}: expected img_align_celeba/ (or .zip), "
            "list_attr_celeba.txt and list_eval_partition.txt, or a TFDS data_dir with celeb_a/"
        )
    out = Path(out_dir).expanduser()
    for split in SPLITS:
        _atomic_save(out / split / "image_64x64.npy", arrays[f"{split}_x"])
        _atomic_save(out / split / "attr.npy", arrays[f"{split}_attr"])
    names = json.dumps([str(n) for n in arrays["attr_names"]])
    _atomic_write(out / "attr_names.json", names.encode())
    return out


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    buf = _io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    io.write_bytes(str(path), buf.getvalue())


def _atomic_write(path: Path, data: bytes) -> None:
    io.write_bytes(str(path), data)
