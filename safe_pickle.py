"""Read pickled weights and data without running any code they carry.

A pickle is a small program: its GLOBAL opcodes import any name, and its REDUCE opcode calls what
they imported (`os.system("...")` is two opcodes). `pickle.load`, `torch.load(weights_only=False)`
and `jt.load` run that program. `load` here reads:

- legacy checkpoints of this repo (`.ckpt`): a pickle of numpy arrays and plain data;
- Jittor's `.pkl` (jt.save): a pickle of numpy arrays (or of Jittor Vars, which wrap one), followed
  by a SHA-1 checksum that is checked here;
- torch files (`.pth`/`.pt`, torch.save with torch >= 1.6: a zip holding `<prefix>/data.pkl` and
  the raw bytes of each storage under `<prefix>/data/<key>`; or torch < 1.6's legacy format, one
  stream of pickles followed by the raw storages, as older teachers were saved): a state dict or mdistiller's
  {"model": state_dict, "optimizer": ..., "epoch": ..., "best_acc": ...}, **without torch**: every
  tensor comes back as a numpy array (a copy; bfloat16 as float32, which holds every bfloat16 value);
- the official CIFAR-10/100 python batches (Python 2 pickles: pass encoding="latin1" or "bytes").

What the pickle may name (find_class) is an explicit whitelist of (module, name) pairs, the same
idea as torch's own torch/_weights_only_unpickler.py; each allowed name is replaced by a function
of this module that checks its arguments and builds plain data (never the named object itself, and
torch is never imported):

- collections.OrderedDict (state dicts);
- numpy arrays, scalars and dtypes: numpy.core.multiarray._reconstruct / .scalar, numpy.ndarray,
  numpy.dtype, numpy.core.numeric._frombuffer (protocol 5), also under numpy 2's `numpy._core`;
- _codecs.encode, restricted to latin-1: Python 3 writes `bytes` in protocols 0-2 as
  `_codecs.encode(text, "latin1")` (numpy arrays pickled with protocol 2, torch.save's protocol);
  encoding a str as latin-1 only yields bytes;
- builtins.bytes, called with no arguments: Python 3 writes empty
  bytes (an empty array's data) in protocols 0-2 as `bytes()`;
- jittor.jittor_core.Var (jt.save of a state dict): becomes the numpy array it wraps;
- in torch files only (zip, or the legacy format of torch < 1.6): torch._utils._rebuild_tensor_v2 / _v3 / _rebuild_parameter(_with_state),
  the typed storage classes (torch.FloatStorage, ...), torch.UntypedStorage, torch dtypes
  (torch.float32, ...) and torch.Size.

Whitelisted names can still be called with crafted arguments, and pickle's other object-making
opcodes can be pointed at them, so the opcodes are restricted too:

- REDUCE (a call) may only call the whitelisted replacements above, which check types, shapes and
  bounds (a tensor view must lie inside its storage) and otherwise raise.
- BUILD (`obj.__setstate__(state)`) is the dangerous one: numpy's dtype.__setstate__ takes the
  dtype's flags from the pickle, so a crafted state can mark an object dtype as holding no Python
  objects, and ndarray.__setstate__ then accepts raw bytes as object pointers (a forged pointer:
  a crash, or worse). BUILD is therefore allowed only once on an array just made by _reconstruct,
  once on a dtype just made by numpy.dtype, with exactly the state numpy itself writes for that
  dtype (so no structured or subarray dtype, and flags and size as numpy computes them), and on an
  OrderedDict (it sets attributes such as a state dict's `_metadata`). A dtype can be used only
  once it has its state, so no array ever sees its dtype change.
- NEWOBJ, NEWOBJ_EX, OBJ and INST (create an instance of a named class) are refused: plain data
  and weights never need them. Persistent ids (PERSID) are refused outside torch zip files.

To get this control over every opcode the pure-Python unpickler (pickle._Unpickler) is subclassed;
it is slower than the C one, which does not matter for state dicts and data batches.

Errors: `load` raises RefusedError ("<file>: refused: <what>") when the file names or does
something that is not plain data or weights, and UnreadableError ("<file>: cannot read: <why>"), a
subclass of both RefusedError and ValueError, when it cannot be read cleanly: truncated, not a
pickle, a damaged zip, a torch storage type or tensor kind not supported here (quantized, sparse,
...), torch's even older tar format (torch < 0.4) or a big-endian legacy file. Each message is one line. `except RefusedError` catches both. A missing file raises the
usual OSError (FileNotFoundError).
"""
import _compat_pickle
import collections
import hashlib
import io
import operator
import os
import pickle
import zipfile

import numpy as np

__all__ = ["load", "RefusedError", "UnreadableError"]


class RefusedError(Exception):
    """The file was not read because reading it could run code: one line, naming the file and what."""


class UnreadableError(RefusedError, ValueError):
    """The file cannot be read cleanly (damaged, not a pickle, a format or tensor kind not supported)."""


class _Refused(Exception):
    """Raised while reading; load() turns it into RefusedError with the file name."""


class _Unreadable(Exception):
    """Raised while reading; load() turns it into UnreadableError with the file name."""


def load(path, encoding="ASCII"):
    """The object pickled in path (a plain pickle or a torch zip file), built without running its code.

    encoding decodes Python 2 `str` objects (as pickle.load's): "latin1" or "bytes" for the CIFAR files.
    """
    with open(path, "rb") as f:  # a missing file: the usual FileNotFoundError, not a refusal
        raw = f.read()
    name = _one_line(os.fspath(path))
    try:
        if _is_torch_zip(raw):
            return _load_torch_zip(raw, encoding)
        return _load_plain(raw, encoding)
    except _Refused as e:
        raise RefusedError(f"{name}: refused: {e}") from None
    except _Unreadable as e:
        raise UnreadableError(f"{name}: cannot read: {e}") from None
    except Exception as e:  # truncated, not a pickle, bad arguments to a whitelisted name, ...
        raise UnreadableError(f"{name}: cannot read: damaged or not a pickle of data "
                              f"({type(e).__name__}: {_one_line(str(e))})") from None


def _one_line(text, limit=300):
    """Messages stay on one line, however odd the names in a crafted file."""
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- file kinds

# torch < 1.6 wrote a pickle of this magic number first (then pickles and raw storages, not a zip)
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_TORCH_START = b"\x80\x02\x8a\x0a" + _LEGACY_TORCH_MAGIC.to_bytes(10, "little")

_JITTOR_TRAILER = b"HCAJSLHD"  # jt.save writes pickle + sha1(pickle) + this


def _load_plain(raw, encoding):
    if raw.startswith(_LEGACY_TORCH_START):
        return _load_torch_legacy(raw, encoding)
    if raw.endswith(_JITTOR_TRAILER) and len(raw) >= 28:
        body, digest = raw[:-28], raw[-28:-8]
        if hashlib.sha1(body).digest() != digest:
            raise _Unreadable("Jittor file with a wrong checksum (damaged or truncated)")
        raw = body
    if not raw:
        raise _Unreadable("empty file")
    return _SafeUnpickler(io.BytesIO(raw), encoding, _PLAIN_GLOBALS).load()


def _is_torch_zip(raw):
    return raw[:4] == b"PK\x03\x04" and zipfile.is_zipfile(io.BytesIO(raw))


def _load_torch_zip(raw, encoding):
    archive = zipfile.ZipFile(io.BytesIO(raw))
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise _Unreadable("a zip file, but not one written by torch.save (no single <name>/data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise _Unreadable(f"unknown byte order {byteorder!r} in the torch file")
    storages = _TorchStorages(archive, prefix, byteorder)
    unpickler = _SafeUnpickler(io.BytesIO(archive.read(pickles[0])), encoding, _TORCH_GLOBALS, storages)
    return unpickler.load()


def _load_torch_legacy(raw, encoding):
    """torch < 1.6 (and _use_new_zipfile_serialization=False): one stream of pickles of the magic
    number, the protocol version (1001) and the system info; the object, its storages as persistent
    ids; the list of storage keys; then each storage as its element count (int64) and raw bytes.

    The storages' bytes come after the object that uses them, and their element sizes are known
    only from the object: so its tensors are first placeholders (_LazyTensor), the storages are read
    next, and the placeholders are then replaced by numpy arrays.
    """
    f = io.BytesIO(raw)
    magic, version, info = (_SafeUnpickler(f, encoding, _PLAIN_GLOBALS).load() for _ in range(3))
    if magic != _LEGACY_TORCH_MAGIC or version != 1001 or not isinstance(info, dict):
        raise _Unreadable("a damaged torch file in the legacy format (bad magic number or protocol)")
    if not info.get("little_endian", True):
        raise _Unreadable("a big-endian torch file in the legacy format, which is not supported")
    storages = _LegacyStorages()
    obj = _SafeUnpickler(f, encoding, _TORCH_GLOBALS, storages).load()
    keys = _SafeUnpickler(f, encoding, _PLAIN_GLOBALS).load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Unreadable("a damaged torch file in the legacy format (no list of storage keys)")
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
            raise _Unreadable("unknown persistent id in the torch file (not a storage; a pickled module?)")
        _, kind, key, _location, numel, view = pid
        if not isinstance(kind, _TorchType) or not isinstance(key, str):
            raise _Unreadable("malformed storage reference in the torch file")
        if self.kinds.setdefault(key, (kind, operator.index(numel)))[0] is not kind:
            raise _Unreadable(f"storage {_one_line(key, 40)} is used with two types")
        if view is None:
            return key, 0
        _view_key, offset, _size = view  # a view of the root storage from element `offset` on
        return key, operator.index(offset)

    def read(self, key, f):
        """The storage's element count (int64) and raw little-endian bytes, as a flat numpy array."""
        if key not in self.kinds:
            raise _Unreadable(f"storage {_one_line(key, 40)} is not used by any tensor of the torch file")
        kind, numel = self.kinds[key]
        count = np.frombuffer(f.read(8), dtype="<i8")
        if count.size != 1 or count[0] != numel:
            raise _Unreadable(f"storage {_one_line(key, 40)} is truncated or has another size than declared")
        data = f.read(numel * kind.raw.itemsize)
        if len(data) != numel * kind.raw.itemsize:
            raise _Unreadable(f"storage {_one_line(key, 40)} is truncated")
        raw = np.frombuffer(data, dtype=kind.raw.newbyteorder("<"))
        return kind.convert(raw.astype(kind.raw.newbyteorder("="), copy=True))


# ---------------------------------------------------------------- the restricted unpickler

def _refusing(opcode):
    def refuse(unpickler):
        raise _Refused(f"it creates an object with the {opcode} opcode, which plain data or weights never use")
    return refuse


class _SafeUnpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler with a whitelist of names and a say over every object-making opcode."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, encoding, allowed, storages=None):
        super().__init__(file, encoding=encoding)
        # each allowed (module, name) -> the bound method of this reader that stands in for it
        self._globals = {key: (getattr(self, attr) if isinstance(attr, str) else attr)
                         for key, attr in allowed.items()}
        self._callables = [v for v in self._globals.values() if callable(v) and v is not np.ndarray]
        self._storages = storages
        self._fresh_arrays = {}  # id -> array made by _reconstruct, not yet given its state
        self._fresh_dtypes = {}  # id -> (dtype, its constructor args), not yet given its state

    # names ---------------------------------------------------------
    def find_class(self, module, name):
        if self.proto < 3:  # as pickle.load: protocols 0-2 spell modules as Python 2 did (__builtin__, ...)
            module, name = _python3_name(module, name)
        try:
            return self._globals[(module, name)]
        except (KeyError, TypeError):
            pass
        full = _one_line(f"{module}.{name}", 120)
        if self._storages is not None and module in ("torch", "torch.storage") and name.endswith("Storage"):
            raise _Unreadable(f"unsupported torch storage type {full} (quantized or unknown)")
        if self._storages is not None and module == "torch._utils" and name.startswith("_rebuild_"):
            raise _Unreadable(f"unsupported kind of tensor ({full}): only dense tensors are read")
        raise _Refused(f"it pickles {full}, which is not plain data or weights (loading it could run code)")

    def persistent_load(self, pid):
        if self._storages is None:
            raise _Refused("it uses a persistent id, which a plain pickle of data never needs")
        return self._storages.get(pid)

    # opcodes -------------------------------------------------------
    def _reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is allowed for allowed in self._callables):
            raise _Refused(f"it calls a {type(func).__name__}, which is not one of the allowed constructors")
        if not isinstance(args, tuple):
            raise _Unreadable("malformed call (arguments are not a tuple)")
        self.stack[-1] = func(*args)

    def _build(self):
        state = self.stack.pop()
        obj = self.stack[-1]
        if self._fresh_arrays.pop(id(obj), None) is obj:
            self._set_array_state(obj, state)
        elif id(obj) in self._fresh_dtypes and self._fresh_dtypes[id(obj)][0] is obj:
            self._set_dtype_state(obj, state)
        elif type(obj) is collections.OrderedDict and isinstance(state, dict) and all(
                type(k) is str for k in state):
            obj.__dict__.update(state)  # plain attributes, e.g. a torch state dict's _metadata
        else:
            raise _Refused(f"it sets the state of a {type(obj).__name__} (BUILD), "
                           "which plain data or weights never do")

    dispatch[pickle.REDUCE[0]] = _reduce
    dispatch[pickle.BUILD[0]] = _build
    for _op in ("NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"):  # make an instance of a named class
        dispatch[getattr(pickle, _op)[0]] = _refusing(_op)
    del _op

    # numpy ---------------------------------------------------------
    def _reconstruct(self, cls, shape, typecode):
        """An empty ndarray that BUILD then fills (numpy's own pickle format)."""
        if cls is not np.ndarray:
            raise _Refused(f"it reconstructs a {_one_line(repr(cls), 80)} as a numpy array")
        if 0 not in _ints(shape):  # numpy writes (0,): BUILD gives the real shape; nothing big is allocated here
            raise _Unreadable("numpy array reconstructed with a non-empty shape")
        array = _np_multiarray._reconstruct(np.ndarray, _ints(shape), typecode)
        self._fresh_arrays[id(array)] = array
        return array

    def _set_array_state(self, array, state):
        """ndarray.__setstate__, given only a state as numpy writes it: sizes are checked here first."""
        if not isinstance(state, tuple) or len(state) not in (4, 5) or (len(state) == 5 and state[0] != 1):
            raise _Unreadable("malformed numpy array state")
        shape, dtype, fortran, data = state[-4:]
        shape = _ints(shape)
        self._check_dtype_ready(dtype)
        count = int(np.prod(shape, dtype=object))
        if dtype.hasobject:  # numpy pickles an object array's items as a list, each read through this reader
            ok = isinstance(data, list) and len(data) == count
        else:  # raw bytes (str under encoding="latin1" for Python 2 files)
            ok = isinstance(data, (bytes, bytearray, str)) and len(data) == count * dtype.itemsize
        if not ok or not isinstance(fortran, (bool, int)):
            raise _Unreadable("numpy array data that does not match its shape and dtype")
        array.__setstate__(state)

    def _dtype(self, spec, align=False, copy=True):
        """numpy.dtype for a type string such as 'f4' or '<U5'; never a structured dtype."""
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str):
            raise _Refused(f"it makes a numpy dtype from a {type(spec).__name__}, not a type string")
        # always a new object: BUILD then changes only it, never numpy's shared dtype singletons
        dtype = np.dtype(spec, bool(align), True)
        if dtype.names is not None or dtype.subdtype is not None:
            raise _Refused(f"it makes the structured numpy dtype {_one_line(spec, 80)}")
        self._fresh_dtypes[id(dtype)] = (dtype, (spec, bool(align)))
        return dtype

    def _set_dtype_state(self, dtype, state):
        """dtype.__setstate__, only with the very state numpy computes for this dtype (and byte order).

        numpy takes a dtype's flags, size and fields from the state without checking them; a crafted
        state can mark an object dtype as holding no objects (then raw bytes become object pointers),
        and odd states can crash numpy. So the state must equal numpy's own, or the file is refused.
        """
        spec, align = self._fresh_dtypes[id(dtype)][1]
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        order = order.decode("latin1") if isinstance(order, bytes) else order  # Python 2 files, encoding="bytes"
        if order not in ("<", ">", "|", "="):
            raise _Refused("it gives a numpy dtype a state that numpy would not write")
        expected = np.dtype(spec, align, True)
        if order in "<>":
            expected = expected.newbyteorder(order)
        normal = (state[0], order) + tuple(state[2:])
        if not _same_state(normal, expected.__reduce__()[2]):
            raise _Refused("it gives a numpy dtype a state that numpy would not write (flags, size or fields; "
                           "such a dtype can forge object pointers)")
        dtype.__setstate__(state)
        del self._fresh_dtypes[id(dtype)]  # complete now, and never changed again

    def _check_dtype_ready(self, dtype):
        if not isinstance(dtype, np.dtype):
            raise _Unreadable(f"expected a numpy dtype, found a {type(dtype).__name__}")
        if id(dtype) in self._fresh_dtypes:
            raise _Refused("it uses a numpy dtype before giving it its state")

    def _scalar(self, dtype, data):
        """A numpy scalar (np.float64(...)) from its raw bytes."""
        self._check_dtype_ready(dtype)
        if dtype.hasobject or not isinstance(data, (bytes, str)):
            raise _Refused("it makes a numpy scalar of Python objects")
        if len(data) != dtype.itemsize:
            raise _Unreadable("numpy scalar data that does not match its dtype")
        return _np_multiarray.scalar(dtype, data)

    def _frombuffer(self, buf, dtype, shape, order):
        """numpy's protocol-5 array: raw bytes, dtype, shape, order."""
        self._check_dtype_ready(dtype)
        if dtype.hasobject or not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F"):
            raise _Refused("it makes a numpy array from a buffer with an object dtype or odd arguments")
        return np.frombuffer(buf, dtype=dtype).reshape(_ints(shape), order=order)

    def _encode(self, text, encoding="latin1"):
        """_codecs.encode as Python 3 uses it for bytes in protocols 0-2: latin-1 only."""
        if not isinstance(text, str) or str(encoding).lower().replace("-", "") not in ("latin1", "iso88591"):
            raise _Refused(f"it calls _codecs.encode with the codec {_one_line(str(encoding), 40)}, not latin-1")
        return text.encode("latin1")

    def _empty_bytes(self, *args):
        """bytes(): how Python 3 writes b"" in protocols 0-2; bytes(n) (n zero bytes) is not needed."""
        if args:
            raise _Refused("it calls bytes with arguments")
        return b""

    def _jittor_var(self, array):
        """jittor_core.Var(ndarray) -> the ndarray (a Jittor Var pickles as the array it holds)."""
        if not isinstance(array, np.ndarray):
            raise _Refused(f"it makes a Jittor Var from a {type(array).__name__}")
        return array

    # torch ---------------------------------------------------------
    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        """torch._utils._rebuild_tensor_v2 -> numpy array (a copy of the view of storage)."""
        if hooks or metadata:  # backward hooks would be functions; conj/neg bits are not read
            raise _Unreadable("a tensor with backward hooks or conj/neg metadata is not supported")
        if isinstance(self._storages, _LegacyStorages):  # storage = (key, base) of a storage not read yet
            if not (isinstance(storage, tuple) and len(storage) == 2 and storage[0] in self._storages.kinds):
                raise _Unreadable("malformed tensor: its storage is not one of the file's")
            return _LazyTensor(storage, offset, _ints(size), _ints(stride))
        return _strided_copy(storage, offset, size, stride)

    def _rebuild_tensor_v3(self, storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        """Used by torch for dtypes without a typed storage (uint16/32/64): bytes + dtype."""
        if not isinstance(dtype, _TorchType) or not isinstance(storage, np.ndarray) or storage.dtype != np.uint8:
            raise _Unreadable("malformed tensor (_rebuild_tensor_v3)")
        if storage.size % dtype.raw.itemsize:
            raise _Unreadable("a storage whose size is not a whole number of elements")
        typed = dtype.convert(storage.view(dtype.raw.newbyteorder("=")))
        return self._rebuild_tensor_v2(typed, offset, size, stride, requires_grad, hooks, metadata)

    def _rebuild_parameter(self, data, requires_grad=False, hooks=None, state=None):
        """nn.Parameter -> its data (also stands in for _rebuild_parameter_with_state)."""
        if not isinstance(data, (np.ndarray, _LazyTensor)):
            raise _Unreadable(f"a parameter holding a {type(data).__name__}, not a tensor")
        return data

    def _torch_size(self, dims=()):
        return _ints(dims)


def _same_state(state, expected):
    """state == expected, bytes and str alike (a Python 2 file read with encoding="bytes" has bytes)."""
    if isinstance(state, bytes) and isinstance(expected, str):
        state = state.decode("latin1")
    if isinstance(state, tuple) and isinstance(expected, tuple):
        return len(state) == len(expected) and all(_same_state(a, b) for a, b in zip(state, expected))
    return type(state) is type(expected) and state == expected


def _python3_name(module, name):
    """pickle's own renaming of Python 2 names (__builtin__.eval -> builtins.eval, commands -> subprocess)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _ints(values):
    """A shape or stride: a tuple of non-negative ints (operator.index refuses floats and the like)."""
    result = tuple(operator.index(v) for v in values)
    if any(v < 0 for v in result):
        raise _Unreadable(f"negative size or stride {result}")
    return result


def _strided_copy(storage, offset, size, stride):
    """numpy's view of storage[offset] with torch's size and stride (in elements), copied; bounds checked."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1 or not storage.flags.c_contiguous:
        raise _Unreadable("malformed tensor: its storage is not a flat array")
    offset, size, stride = operator.index(offset), _ints(size), _ints(stride)
    if len(size) != len(stride) or offset < 0:
        raise _Unreadable("malformed tensor: size and stride do not match")
    if 0 in size:  # an empty tensor reads nothing
        return np.empty(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:  # the view must lie inside the storage: as_strided does not check
        raise _Unreadable(f"malformed tensor: a view reaching element {last} of a storage of {storage.size}")
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
            raise _Unreadable("unknown persistent id in the torch file (not a storage)")
        _, kind, key, _location, numel = pid  # location ('cpu', 'cuda:0'): everything comes to numpy
        if not isinstance(kind, _TorchType) or not isinstance(key, str):
            raise _Unreadable("malformed storage reference in the torch file")
        if key in self.loaded:
            if self.loaded[key][0] is not kind:
                raise _Unreadable(f"storage {key} is used with two types")
            return self.loaded[key][1]
        numel = operator.index(numel)
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise _Unreadable(f"storage {_one_line(name, 80)} is missing from the torch file") from None
        if numel < 0 or info.file_size != numel * kind.raw.itemsize:
            raise _Unreadable(f"storage {_one_line(name, 80)} has {info.file_size} bytes, "
                              f"not {numel} elements of {kind.raw}")
        raw = np.frombuffer(self.archive.read(name), dtype=kind.raw.newbyteorder(self.order))
        array = kind.convert(raw.astype(kind.raw.newbyteorder("="), copy=True))  # native and writable
        self.loaded[key] = (kind, array)
        return array


# ---------------------------------------------------------------- the whitelist

if int(np.__version__.split(".")[0]) >= 2:
    from numpy._core import multiarray as _np_multiarray
else:
    from numpy.core import multiarray as _np_multiarray

# (module, name) -> method of _SafeUnpickler that stands in for it (or the object itself)
_PLAIN_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): "_encode",
    ("builtins", "bytes"): "_empty_bytes",
    ("jittor", "jittor_core.Var"): "_jittor_var",
    ("numpy", "ndarray"): np.ndarray,  # only as _reconstruct's first argument: REDUCE never calls it
    ("numpy", "dtype"): "_dtype",
}
for _core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spell the module differently
    _PLAIN_GLOBALS.update({
        (f"{_core}.multiarray", "_reconstruct"): "_reconstruct",
        (f"{_core}.multiarray", "scalar"): "_scalar",
        (f"{_core}.numeric", "_frombuffer"): "_frombuffer",
    })

# torch's storage classes and dtypes -> the numpy dtype of their bytes
_TORCH_TYPES = {
    "Double": ("float64", np.float64), "Float": ("float32", np.float32), "Half": ("float16", np.float16),
    "BFloat16": ("bfloat16", np.uint16), "Long": ("int64", np.int64), "Int": ("int32", np.int32),
    "Short": ("int16", np.int16), "Char": ("int8", np.int8), "Byte": ("uint8", np.uint8),
    "Bool": ("bool", np.bool_), "ComplexFloat": ("complex64", np.complex64),
    "ComplexDouble": ("complex128", np.complex128),
}
_TORCH_GLOBALS = dict(_PLAIN_GLOBALS)
_TORCH_GLOBALS.update({
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
    _TORCH_GLOBALS[("torch", f"{_kind}Storage")] = _type
    _TORCH_GLOBALS[("torch", _dtype_name)] = _type
for _bits in (16, 32, 64):  # no typed storage: they come with _rebuild_tensor_v3
    _TORCH_GLOBALS[("torch", f"uint{_bits}")] = _TorchType(f"uint{_bits}", f"uint{_bits}")
del _core, _kind, _dtype_name, _raw, _type, _bits
