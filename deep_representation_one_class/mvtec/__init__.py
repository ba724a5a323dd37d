"""MVTec AD: patch-level representation learning, image-level detection and pixel localisation.

``patches`` cuts random training windows (``patch_view_fn``, used by ``train_lib`` for patch
tasks) and the dense test grid; ``evaluate`` fits the one-class scorers on a bank of training
windows and scores every test image densely; ``metrics`` holds pixel AUROC and PRO; ``visualize``
renders anomaly-map panels; ``report`` tabulates a sweep over categories. Importing this package
registers the ``mvtec`` dataset (``datasets.mvtec``); the TensorFlow-dependent submodules are
imported by the code that needs them.
"""

from __future__ import annotations

from deep_representation_one_class.datasets import mvtec as _dataset  # noqa: F401  (registers)
