"""Datasets: numpy loaders of the one-class benchmarks, user image folders and a fake dataset.

Each dataset is one file whose ``PLUGIN`` description the catalog reads; :data:`DATASETS`
imports a dataset's file the first time it is looked up. The public entry point is
:func:`load_one_class`, which returns a :class:`OneClassData` of uint8
arrays; :func:`expand_distaug` applies the offline distribution augmentation to its
``train_x``. Nothing here builds tf.data pipelines (see ``pipeline.py``).
"""

from __future__ import annotations

from deep_representation_one_class.datasets.base import (
    DATASETS,
    DataError,
    DatasetSpec,
    OneClassData,
    SourceArrays,
    SplitIndices,
    load_one_class,
    one_class_indices,
    register_dataset,
    validate_category,
    validate_input_shape,
)
from deep_representation_one_class.datasets.cache import (
    cached_arrays,
    default_cache_dir,
    fingerprint,
)
from deep_representation_one_class.datasets.distaug import (
    distaug_factor,
    expand_distaug,
    validate_distaug,
)

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetSpec",
    "OneClassData",
    "SourceArrays",
    "SplitIndices",
    "cached_arrays",
    "default_cache_dir",
    "distaug_factor",
    "expand_distaug",
    "fingerprint",
    "load_one_class",
    "one_class_indices",
    "register_dataset",
    "validate_category",
    "validate_distaug",
    "validate_input_shape",
]
