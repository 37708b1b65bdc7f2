"""The restricted unpickler behind common.safe_pickle: a whitelist of names, a say over every opcode.

pickle's pure-Python unpickler (pickle._Unpickler) is subclassed to control REDUCE and BUILD and
to refuse NEWOBJ/NEWOBJ_EX/OBJ/INST; each whitelisted name stands for a method here that checks
its arguments and builds plain data (numpy arrays, scalars, dtypes, OrderedDict, bytes).
common.safe_pickle's docstring explains why each rule is there; common.torch_pickle adds torch's
tensors and storages on top.
"""
import _compat_pickle
import collections
import operator
import pickle

import numpy as np


class Refused(Exception):
    """Raised while reading; load() turns it into RefusedError with the file name."""


class Unreadable(Exception):
    """Raised while reading; load() turns it into UnreadableError with the file name."""



def one_line(text, limit=300):
    """Messages stay on one line, however odd the names in a crafted file."""
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."



def _refusing(opcode):
    def refuse(unpickler):
        raise Refused(f"it creates an object with the {opcode} opcode, which plain data or weights never use")
    return refuse


class SafeUnpickler(pickle._Unpickler):
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
        full = one_line(f"{module}.{name}", 120)
        if self._storages is not None and module in ("torch", "torch.storage") and name.endswith("Storage"):
            raise Unreadable(f"unsupported torch storage type {full} (quantized or unknown)")
        if self._storages is not None and module == "torch._utils" and name.startswith("_rebuild_"):
            raise Unreadable(f"unsupported kind of tensor ({full}): only dense tensors are read")
        raise Refused(f"it pickles {full}, which is not plain data or weights (loading it could run code)")

    def persistent_load(self, pid):
        if self._storages is None:
            raise Refused("it uses a persistent id, which a plain pickle of data never needs")
        return self._storages.get(pid)

    # opcodes -------------------------------------------------------
    def _reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is allowed for allowed in self._callables):
            raise Refused(f"it calls a {type(func).__name__}, which is not one of the allowed constructors")
        if not isinstance(args, tuple):
            raise Unreadable("malformed call (arguments are not a tuple)")
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
            raise Refused(f"it sets the state of a {type(obj).__name__} (BUILD), "
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
            raise Refused(f"it reconstructs a {one_line(repr(cls), 80)} as a numpy array")
        if 0 not in ints(shape):  # numpy writes (0,): BUILD gives the real shape; nothing big is allocated here
            raise Unreadable("numpy array reconstructed with a non-empty shape")
        array = _np_multiarray._reconstruct(np.ndarray, ints(shape), typecode)
        self._fresh_arrays[id(array)] = array
        return array

    def _set_array_state(self, array, state):
        """ndarray.__setstate__, given only a state as numpy writes it: sizes are checked here first."""
        if not isinstance(state, tuple) or len(state) not in (4, 5) or (len(state) == 5 and state[0] != 1):
            raise Unreadable("malformed numpy array state")
        shape, dtype, fortran, data = state[-4:]
        shape = ints(shape)
        self._check_dtype_ready(dtype)
        count = int(np.prod(shape, dtype=object))
        if dtype.hasobject:  # numpy pickles an object array's items as a list, each read through this reader
            ok = isinstance(data, list) and len(data) == count
        else:  # raw bytes (str under encoding="latin1" for Python 2 files)
            ok = isinstance(data, (bytes, bytearray, str)) and len(data) == count * dtype.itemsize
        if not ok or not isinstance(fortran, (bool, int)):
            raise Unreadable("numpy array data that does not match its shape and dtype")
        array.__setstate__(state)

    def _dtype(self, spec, align=False, copy=True):
        """numpy.dtype for a type string such as 'f4' or '<U5'; never a structured dtype."""
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str):
            raise Refused(f"it makes a numpy dtype from a {type(spec).__name__}, not a type string")
        # always a new object: BUILD then changes only it, never numpy's shared dtype singletons
        dtype = np.dtype(spec, bool(align), True)
        if dtype.names is not None or dtype.subdtype is not None:
            raise Refused(f"it makes the structured numpy dtype {one_line(spec, 80)}")
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
            raise Refused("it gives a numpy dtype a state that numpy would not write")
        expected = np.dtype(spec, align, True)
        if order in "<>":
            expected = expected.newbyteorder(order)
        normal = (state[0], order) + tuple(state[2:])
        if not _same_state(normal, expected.__reduce__()[2]):
            raise Refused("it gives a numpy dtype a state that numpy would not write (flags, size or fields; "
                           "such a dtype can forge object pointers)")
        dtype.__setstate__(state)
        del self._fresh_dtypes[id(dtype)]  # complete now, and never changed again

    def _check_dtype_ready(self, dtype):
        if not isinstance(dtype, np.dtype):
            raise Unreadable(f"expected a numpy dtype, found a {type(dtype).__name__}")
        if id(dtype) in self._fresh_dtypes:
            raise Refused("it uses a numpy dtype before giving it its state")

    def _scalar(self, dtype, data):
        """A numpy scalar (np.float64(...)) from its raw bytes."""
        self._check_dtype_ready(dtype)
        if dtype.hasobject or not isinstance(data, (bytes, str)):
            raise Refused("it makes a numpy scalar of Python objects")
        if len(data) != dtype.itemsize:
            raise Unreadable("numpy scalar data that does not match its dtype")
        return _np_multiarray.scalar(dtype, data)

    def _frombuffer(self, buf, dtype, shape, order):
        """numpy's protocol-5 array: raw bytes, dtype, shape, order."""
        self._check_dtype_ready(dtype)
        if dtype.hasobject or not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F"):
            raise Refused("it makes a numpy array from a buffer with an object dtype or odd arguments")
        return np.frombuffer(buf, dtype=dtype).reshape(ints(shape), order=order)

    def _encode(self, text, encoding="latin1"):
        """_codecs.encode as Python 3 uses it for bytes in protocols 0-2: latin-1 only."""
        if not isinstance(text, str) or str(encoding).lower().replace("-", "") not in ("latin1", "iso88591"):
            raise Refused(f"it calls _codecs.encode with the codec {one_line(str(encoding), 40)}, not latin-1")
        return text.encode("latin1")

    def _empty_bytes(self, *args):
        """bytes(): how Python 3 writes b"" in protocols 0-2; bytes(n) (n zero bytes) is not needed."""
        if args:
            raise Refused("it calls bytes with arguments")
        return b""

    def _jittor_var(self, array):
        """jittor_core.Var(ndarray) -> the ndarray (a Jittor Var pickles as the array it holds)."""
        if not isinstance(array, np.ndarray):
            raise Refused(f"it makes a Jittor Var from a {type(array).__name__}")
        return array


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


def ints(values):
    """A shape or stride: a tuple of non-negative ints (operator.index refuses floats and the like)."""
    result = tuple(operator.index(v) for v in values)
    if any(v < 0 for v in result):
        raise Unreadable(f"negative size or stride {result}")
    return result



if int(np.__version__.split(".")[0]) >= 2:
    from numpy._core import multiarray as _np_multiarray
else:
    from numpy.core import multiarray as _np_multiarray

# (module, name) -> method of SafeUnpickler that stands in for it (or the object itself)
PLAIN_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): "_encode",
    ("builtins", "bytes"): "_empty_bytes",
    ("jittor", "jittor_core.Var"): "_jittor_var",
    ("numpy", "ndarray"): np.ndarray,  # only as _reconstruct's first argument: REDUCE never calls it
    ("numpy", "dtype"): "_dtype",
}
for _core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spell the module differently
    PLAIN_GLOBALS.update({
        (f"{_core}.multiarray", "_reconstruct"): "_reconstruct",
        (f"{_core}.multiarray", "scalar"): "_scalar",
        (f"{_core}.numeric", "_frombuffer"): "_frombuffer",
    })
