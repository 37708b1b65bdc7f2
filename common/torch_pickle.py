"""torch's file formats for common.safe_pickle, read without torch and without running code.

torch >= 1.6 writes a zip holding `<prefix>/data.pkl` and each storage's raw bytes under
`<prefix>/data/<key>`; torch < 1.6 (and _use_new_zipfile_serialization=False) wrote one stream
of pickles followed by the raw storages. Tensors come back as numpy arrays (copies; bfloat16 as
float32, which holds every bfloat16 value).
"""
import io
import operator
import zipfile

import numpy as np

from common.unpickler import PLAIN_GLOBALS, SafeUnpickler, Unreadable, ints, one_line


# torch < 1.6 wrote a pickle of this magic number first (then pickles and raw storages, not a zip)
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_TORCH_START = b"\x80\x02\x8a\x0a" + LEGACY_TORCH_MAGIC.to_bytes(10, "little")


def is_torch_zip(raw):
    return raw[:4] == b"PK\x03\x04" and zipfile.is_zipfile(io.BytesIO(raw))


def load_torch_zip(raw, encoding):
    archive = zipfile.ZipFile(io.BytesIO(raw))
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise Unreadable("a zip file, but not one written by torch.save (no single <name>/data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise Unreadable(f"unknown byte order {byteorder!r} in the torch file")
    storages = _TorchStorages(archive, prefix, byteorder)
    unpickler = TorchUnpickler(io.BytesIO(archive.read(pickles[0])), encoding, TORCH_GLOBALS, storages)
    return unpickler.load()


def load_torch_legacy(raw, encoding):
    """torch < 1.6 (and _use_new_zipfile_serialization=False): one stream of pickles of the magic
    number, the protocol version (1001) and the system info; the object, its storages as persistent
    ids; the list of storage keys; then each storage as its element count (int64) and raw bytes.

    The storages' bytes come after the object that uses them, and their element sizes are known
    only from the object: so its tensors are first placeholders (_LazyTensor), the storages are read
    next, and the placeholders are then replaced by numpy arrays.
    """
    f = io.BytesIO(raw)
    magic, version, info = (SafeUnpickler(f, encoding, PLAIN_GLOBALS).load() for _ in range(3))
    if magic != LEGACY_TORCH_MAGIC or version != 1001 or not isinstance(info, dict):
        raise Unreadable("a damaged torch file in the legacy format (bad magic number or protocol)")
    if not info.get("little_endian", True):
        raise Unreadable("a big-endian torch file in the legacy format, which is not supported")
    storages = _LegacyStorages()
    obj = TorchUnpickler(f, encoding, TORCH_GLOBALS, storages).load()
    keys = SafeUnpickler(f, encoding, PLAIN_GLOBALS).load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise Unreadable("a damaged torch file in the legacy format (no list of storage keys)")
    arrays = {key: storages.read(key, f) for key in keys}
    return _resolve(obj, arrays, {})


class _LazyTensor:
    """A tensor of a legacy torch file whose storage has not been read yet."""

    __slots__ = ("key", "base", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        (self.key, self.base), self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self, arrays):
        return _strided_copy(arrays[self.key], self.base + operator.index(self.offset), self.size, self.stride)


def _resolve(obj, arrays, seen):
    """obj with every _LazyTensor replaced by its numpy array (containers changed in place)."""
    if isinstance(obj, _LazyTensor):
        return obj.array(arrays)
    if id(obj) in seen or not isinstance(obj, (dict, list, tuple)):
        return seen.get(id(obj), obj)
    seen[id(obj)] = obj
    if isinstance(obj, dict):
        for k in obj:
            obj[k] = _resolve(obj[k], arrays, seen)
    elif isinstance(obj, list):
        obj[:] = [_resolve(v, arrays, seen) for v in obj]
    else:
        seen[id(obj)] = obj = tuple(_resolve(v, arrays, seen) for v in obj)
    return obj


class _LegacyStorages:
    """persistent_load of legacy torch files: ('storage', type, key, location, numel, view) -> (key, offset)."""

    def __init__(self):
        self.kinds = {}  # key -> (type, numel)

    def get(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise Unreadable("unknown persistent id in the torch file (not a storage; a pickled module?)")
        _, kind, key, _location, numel, view = pid
        if not isinstance(kind, _TorchType) or not isinstance(key, str):
            raise Unreadable("malformed storage reference in the torch file")
        if self.kinds.setdefault(key, (kind, operator.index(numel)))[0] is not kind:
            raise Unreadable(f"storage {one_line(key, 40)} is used with two types")
        if view is None:
            return key, 0
        _view_key, offset, _size = view  # a view of the root storage from element `offset` on
        return key, operator.index(offset)

    def read(self, key, f):
        """The storage's element count (int64) and raw little-endian bytes, as a flat numpy array."""
        if key not in self.kinds:
            raise Unreadable(f"storage {one_line(key, 40)} is not used by any tensor of the torch file")
        kind, numel = self.kinds[key]
        count = np.frombuffer(f.read(8), dtype="<i8")
        if count.size != 1 or count[0] != numel:
            raise Unreadable(f"storage {one_line(key, 40)} is truncated or has another size than declared")
        data = f.read(numel * kind.raw.itemsize)
        if len(data) != numel * kind.raw.itemsize:
            raise Unreadable(f"storage {one_line(key, 40)} is truncated")
        raw = np.frombuffer(data, dtype=kind.raw.newbyteorder("<"))
        return kind.convert(raw.astype(kind.raw.newbyteorder("="), copy=True))



class TorchUnpickler(SafeUnpickler):
    """SafeUnpickler with the stand-ins for torch's tensor-rebuilding functions (TORCH_GLOBALS)."""

    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        """torch._utils._rebuild_tensor_v2 -> numpy array (a copy of the view of storage)."""
        if hooks or metadata:  # backward hooks would be functions; conj/neg bits are not read
            raise Unreadable("a tensor with backward hooks or conj/neg metadata is not supported")
        if isinstance(self._storages, _LegacyStorages):  # storage = (key, base) of a storage not read yet
            if not (isinstance(storage, tuple) and len(storage) == 2 and storage[0] in self._storages.kinds):
                raise Unreadable("malformed tensor: its storage is not one of the file's")
            return _LazyTensor(storage, offset, ints(size), ints(stride))
        return _strided_copy(storage, offset, size, stride)

    def _rebuild_tensor_v3(self, storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        """Used by torch for dtypes without a typed storage (uint16/32/64): bytes + dtype."""
        if not isinstance(dtype, _TorchType) or not isinstance(storage, np.ndarray) or storage.dtype != np.uint8:
            raise Unreadable("malformed tensor (_rebuild_tensor_v3)")
        if storage.size % dtype.raw.itemsize:
            raise Unreadable("a storage whose size is not a whole number of elements")
        typed = dtype.convert(storage.view(dtype.raw.newbyteorder("=")))
        return self._rebuild_tensor_v2(typed, offset, size, stride, requires_grad, hooks, metadata)

    def _rebuild_parameter(self, data, requires_grad=False, hooks=None, state=None):
        """nn.Parameter -> its data (also stands in for _rebuild_parameter_with_state)."""
        if not isinstance(data, (np.ndarray, _LazyTensor)):
            raise Unreadable(f"a parameter holding a {type(data).__name__}, not a tensor")
        return data

    def _torch_size(self, dims=()):
        return ints(dims)


def _strided_copy(storage, offset, size, stride):
    """numpy's view of storage[offset] with torch's size and stride (in elements), copied; bounds checked."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1 or not storage.flags.c_contiguous:
        raise Unreadable("malformed tensor: its storage is not a flat array")
    offset, size, stride = operator.index(offset), ints(size), ints(stride)
    if len(size) != len(stride) or offset < 0:
        raise Unreadable("malformed tensor: size and stride do not match")
    if 0 in size:  # an empty tensor reads nothing
        return np.empty(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:  # the view must lie inside the storage: as_strided does not check
        raise Unreadable(f"malformed tensor: a view reaching element {last} of a storage of {storage.size}")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(s * storage.itemsize for s in stride), writeable=False)
    return np.array(view, copy=True)


class _TorchType:
    """What a torch storage class or dtype name stands for: the numpy dtype of its raw bytes."""

    __slots__ = ("name", "raw", "bfloat16")

    def __init__(self, name, raw, bfloat16=False):
        self.name, self.raw, self.bfloat16 = name, np.dtype(raw), bfloat16

    def convert(self, array):
        """Raw little/native-endian elements -> the numpy array handed out (bfloat16 -> float32)."""
        if self.bfloat16:  # bfloat16 is the top half of a float32
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array


class _TorchStorages:
    """persistent_load of torch zip files: ('storage', type, key, location, numel) -> flat numpy array."""

    def __init__(self, archive, prefix, byteorder):
        self.archive, self.prefix = archive, prefix
        self.order = "<" if byteorder == "little" else ">"
        self.loaded = {}  # key -> (type, array): tensors sharing a storage share this array

    def get(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise Unreadable("unknown persistent id in the torch file (not a storage)")
        _, kind, key, _location, numel = pid  # location ('cpu', 'cuda:0'): everything comes to numpy
        if not isinstance(kind, _TorchType) or not isinstance(key, str):
            raise Unreadable("malformed storage reference in the torch file")
        if key in self.loaded:
            if self.loaded[key][0] is not kind:
                raise Unreadable(f"storage {key} is used with two types")
            return self.loaded[key][1]
        numel = operator.index(numel)
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise Unreadable(f"storage {one_line(name, 80)} is missing from the torch file") from None
        if numel < 0 or info.file_size != numel * kind.raw.itemsize:
            raise Unreadable(f"storage {one_line(name, 80)} has {info.file_size} bytes, "
                              f"not {numel} elements of {kind.raw}")
        raw = np.frombuffer(self.archive.read(name), dtype=kind.raw.newbyteorder(self.order))
        array = kind.convert(raw.astype(kind.raw.newbyteorder("="), copy=True))  # native and writable
        self.loaded[key] = (kind, array)
        return array



# torch's storage classes and dtypes -> the numpy dtype of their bytes
_TORCH_TYPES = {
    "Double": ("float64", np.float64), "Float": ("float32", np.float32), "Half": ("float16", np.float16),
    "BFloat16": ("bfloat16", np.uint16), "Long": ("int64", np.int64), "Int": ("int32", np.int32),
    "Short": ("int16", np.int16), "Char": ("int8", np.int8), "Byte": ("uint8", np.uint8),
    "Bool": ("bool", np.bool_), "ComplexFloat": ("complex64", np.complex64),
    "ComplexDouble": ("complex128", np.complex128),
}
TORCH_GLOBALS = dict(PLAIN_GLOBALS)
TORCH_GLOBALS.update({
    ("torch._utils", "_rebuild_tensor_v2"): "_rebuild_tensor_v2",
    ("torch._utils", "_rebuild_tensor_v3"): "_rebuild_tensor_v3",
    ("torch._utils", "_rebuild_parameter"): "_rebuild_parameter",
    ("torch._utils", "_rebuild_parameter_with_state"): "_rebuild_parameter",
    ("torch", "Size"): "_torch_size",
    ("torch", "UntypedStorage"): _TorchType("UntypedStorage", np.uint8),
    ("torch.storage", "UntypedStorage"): _TorchType("UntypedStorage", np.uint8),
})
for _kind, (_dtype_name, _raw) in _TORCH_TYPES.items():
    _type = _TorchType(_dtype_name, _raw, bfloat16=_kind == "BFloat16")
    TORCH_GLOBALS[("torch", f"{_kind}Storage")] = _type
    TORCH_GLOBALS[("torch", _dtype_name)] = _type
for _bits in (16, 32, 64):  # no typed storage: they come with _rebuild_tensor_v3
    TORCH_GLOBALS[("torch", f"uint{_bits}")] = _TorchType(f"uint{_bits}", f"uint{_bits}")
del _kind, _dtype_name, _raw, _type, _bits
