"""A reader for PyTorch's legacy (non-zip) ``torch.save`` files that needs no torch.

Only state dicts are read: an ``OrderedDict`` of name -> tensor, each tensor a view into a
typed storage. The file is five pickles followed by raw data (layout of ``torch.save`` with
``_use_new_zipfile_serialization=False``, read from torch's ``serialization.py``):

1. a magic number, 2. the protocol version (1001), 3. a dict of system sizes (endianness),
4. the state dict, whose tensors are ``torch._utils._rebuild_tensor_v2(storage, offset, size,
   stride, requires_grad, hooks)`` with ``storage`` a persistent id
   ``("storage", torch.FloatStorage, key, location, numel, view_metadata)``,
5. the list of storage keys, then for each key in that order an int64 element count and the
   storage's raw bytes.

Safety: a pickle can call any importable function. The unpickler here resolves only the
globals a state dict needs (``collections.OrderedDict``, the tensor-rebuild functions and the
storage type markers); any other global (``os.system``, ``builtins.eval``, ...) raises
``UnsafePickleError`` before anything is called. The file's SHA-256 is checked before the
first byte is unpickled, so a swapped file is refused too.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import struct
from collections.abc import Mapping

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype (little-endian, as the sys-info dict says).
STORAGE_DTYPES: Mapping[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class UnsafePickleError(ValueError):
    """The file asks the unpickler for something a state dict does not need."""


class ChecksumError(ValueError):
    """The file's SHA-256 is not the expected one."""


class _StorageType:
    """Stands in for ``torch.<X>Storage``: only its numpy dtype is kept."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _StorageRef:
    """A storage named by a persistent id; its data are read after the pickles."""

    def __init__(self, key: str, storage_type: _StorageType, numel: int):
        self.key = key
        self.type = storage_type
        self.numel = int(numel)
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor waiting for its storage's data: a strided view (offset, size, stride)."""

    def __init__(self, storage: _StorageRef, offset: int, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError(f"storage {self.storage.key} has no data in the file")
        if not self.size:
            return np.array(data[self.offset], dtype=data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, data.dtype)
        if self.offset < 0 or last >= data.size or min(self.stride) < 0:
            raise ValueError(f"tensor view {self.size} exceeds storage {self.storage.key}")
        item = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    # _rebuild_tensor_v2 also receives requires_grad and backward hooks (ignored here).
    if not isinstance(storage, _StorageRef):
        raise UnsafePickleError("a tensor's storage must be a persistent storage reference")
    return _TensorRef(storage, offset, size, stride)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in STORAGE_DTYPES})


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _StorageRef]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a state dict only needs OrderedDict, "
                "tensor rebuilds and storage types"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unsupported persistent id {pid!r:.60}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError("a storage id must name a torch storage type")
        if len(pid) > 5 and pid[5] is not None:
            raise ValueError("storage views (view_metadata) are not supported")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _StorageRef(key, storage_type, numel)
        return self.storages[key]


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_plain(f):
    # The header pickles and the key list hold only ints, strings, dicts and lists.
    return _Unpickler(f, {}).load()


def load_state_dict(path: str, sha256: str | None) -> dict[str, np.ndarray]:
    """Reads a legacy ``torch.save`` state dict as name -> numpy array.

    Args:
      path: the ``.pth`` file.
      sha256: expected hex digest of the whole file; checked before any unpickling. None skips
        the check (only for files the caller just wrote itself, e.g. tests).

    Returns:
      An ordered dict name -> C-contiguous numpy array (float32 weights, int64 counters).

    Raises:
      ChecksumError: the digest differs.
      UnsafePickleError: the pickle asks for anything but a state dict's parts.
      ValueError: the file is not a legacy state dict (zip format, truncated, not a dict).
    """
    with open(path, "rb") as f:
        raw = f.read()
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256.lower():
            raise ChecksumError(f"{path}: SHA-256 {digest} is not the expected {sha256}")
    if raw[:4] == b"PK\x03\x04":
        raise ValueError(f"{path} is a zip-format torch file; only the legacy format is read")
    f = io.BytesIO(raw)
    try:
        if _load_plain(f) != MAGIC_NUMBER:
            raise ValueError(f"{path} is not a legacy torch file (bad magic number)")
        if _load_plain(f) != PROTOCOL_VERSION:
            raise ValueError(f"{path}: unsupported torch protocol version")
        sys_info = _load_plain(f)
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian torch files are not supported")
        storages: dict[str, _StorageRef] = {}
        state = _Unpickler(f, storages).load()
        keys = _load_plain(f)
    except (pickle.UnpicklingError, EOFError, struct.error) as e:
        raise ValueError(f"{path} is not a readable legacy torch file ({e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    for key in keys:
        key = str(key)
        ref = storages.get(key)
        head = f.read(8)
        if ref is None or len(head) != 8:
            raise ValueError(f"{path}: storage {key} is missing or truncated")
        (numel,) = struct.unpack("<q", head)
        nbytes = numel * ref.type.dtype.itemsize
        buf = f.read(nbytes)
        if numel != ref.numel or len(buf) != nbytes:
            raise ValueError(f"{path}: storage {key} is truncated ({len(buf)} of {nbytes} bytes)")
        ref.data = np.frombuffer(buf, dtype=ref.type.dtype)
    return collections.OrderedDict((str(k), v.materialise()) for k, v in state.items())
