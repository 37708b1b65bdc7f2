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
...), torch's even older tar format (torch < 0.4) or a big-endian legacy file. Each message is one
line. `except RefusedError` catches both. A missing file raises the usual OSError (FileNotFoundError).

The code: common.unpickler (the restricted unpickler and the plain-data whitelist),
common.torch_pickle (torch's formats), and here the entry point and Jittor's checksum.
"""
import hashlib
import io
import os

from common.torch_pickle import LEGACY_TORCH_START, is_torch_zip, load_torch_legacy, load_torch_zip
from common.unpickler import PLAIN_GLOBALS, Refused, SafeUnpickler, Unreadable, one_line

__all__ = ["load", "RefusedError", "UnreadableError"]


class RefusedError(Exception):
    """The file was not read because reading it could run code: one line, naming the file and what."""


class UnreadableError(RefusedError, ValueError):
    """The file cannot be read cleanly (damaged, not a pickle, a format or tensor kind not supported)."""



def load(path, encoding="ASCII"):
    """The object pickled in path (a plain pickle or a torch zip file), built without running its code.

    encoding decodes Python 2 `str` objects (as pickle.load's): "latin1" or "bytes" for the CIFAR files.
    """
    with open(path, "rb") as f:  # a missing file: the usual FileNotFoundError, not a refusal
        raw = f.read()
    name = one_line(os.fspath(path))
    try:
        if is_torch_zip(raw):
            return load_torch_zip(raw, encoding)
        return _load_plain(raw, encoding)
    except Refused as e:
        raise RefusedError(f"{name}: refused: {e}") from None
    except Unreadable as e:
        raise UnreadableError(f"{name}: cannot read: {e}") from None
    except Exception as e:  # truncated, not a pickle, bad arguments to a whitelisted name, ...
        raise UnreadableError(f"{name}: cannot read: damaged or not a pickle of data "
                              f"({type(e).__name__}: {one_line(str(e))})") from None


_JITTOR_TRAILER = b"HCAJSLHD"  # jt.save writes pickle + sha1(pickle) + this


def _load_plain(raw, encoding):
    if raw.startswith(LEGACY_TORCH_START):
        return load_torch_legacy(raw, encoding)
    if raw.endswith(_JITTOR_TRAILER) and len(raw) >= 28:
        body, digest = raw[:-28], raw[-28:-8]
        if hashlib.sha1(body).digest() != digest:
            raise Unreadable("Jittor file with a wrong checksum (damaged or truncated)")
        raw = body
    if not raw:
        raise Unreadable("empty file")
    return SafeUnpickler(io.BytesIO(raw), encoding, PLAIN_GLOBALS).load()
