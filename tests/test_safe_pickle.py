"""safe_pickle: reads weights and data pickles like pickle.load / torch.load(weights_only=True) do, never runs code."""
import collections
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from common import safe_pickle
from common.env import prepare_jittor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ helpers

def to_numpy(obj):
    """torch.load's result with every tensor as numpy (bfloat16 through float32), as safe_pickle returns it."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach()
        return (obj.float() if obj.dtype == torch.bfloat16 else obj).numpy()
    if isinstance(obj, dict):
        return type(obj)((k, to_numpy(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy(v) for v in obj)
    return obj


def assert_same(got, want, where="root"):
    """Same structure, types, dtypes, shapes and exact values (NaN equal to NaN)."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert got.dtype == want.dtype and got.shape == want.shape, (where, got.dtype, want.dtype, got.shape)
        assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"), where
        return
    assert type(got) is type(want), (where, type(got), type(want))
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            assert_same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and want != want:
        assert got != got, where
    else:
        assert got == want, where


def torch_roundtrip(tmp_path, obj, name="model.pth", zipped=True):
    """zipped=False: torch < 1.6's legacy format (a stream of pickles and raw storages)."""
    path = tmp_path / name
    torch.save(obj, path, _use_new_zipfile_serialization=zipped)
    got = safe_pickle.load(path)
    assert_same(got, to_numpy(torch.load(path, weights_only=True)))
    return got


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))


def mdistiller_checkpoint():
    """The layout of mdistiller's released teachers, with a real optimizer state."""
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 240, "best_acc": torch.tensor(73.5)}


def refused(path, *names):
    """load(path) raises RefusedError (not merely unreadable), one line naming the file and each of names."""
    with pytest.raises(safe_pickle.RefusedError) as info:
        safe_pickle.load(path)
    message = str(info.value)
    assert type(info.value) is safe_pickle.RefusedError, message
    assert "\n" not in message and os.path.basename(str(path)) in message and "refused" in message, message
    for name in names:
        assert name in message, message
    return message


def unreadable(path, *words, **kw):
    with pytest.raises(safe_pickle.UnreadableError) as info:
        safe_pickle.load(path, **kw)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, safe_pickle.RefusedError)
    assert "\n" not in message and os.path.basename(str(path)) in message, message
    for word in words:
        assert word in message, message
    return message


class StorageRef:
    """Stands for a torch storage in a hand-made torch zip file (see write_torch_zip)."""

    def __init__(self, kind, key, numel):
        self.kind, self.key, self.numel = kind, key, numel


class Call:
    """Pickles as func(*args): any call, spelled as pickle spells it."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def write_torch_zip(path, obj, storages, byteorder="little", prefix="archive"):
    """A zip laid out as torch.save's, with data.pkl pickling obj (StorageRef -> persistent id)."""
    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return ("storage", o.kind, o.key, "cpu", o.numel) if isinstance(o, StorageRef) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", buffer.getvalue())
        z.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in storages.items():
            z.writestr(f"{prefix}/data/{key}", raw)
        z.writestr(f"{prefix}/version", "3\n")
    return path


def tensor_v2(ref, offset, size, stride):
    return Call(torch._utils._rebuild_tensor_v2, ref, offset, size, stride, False, collections.OrderedDict())


# ------------------------------------------------------------------ torch files, against torch.load(weights_only=True)

@pytest.mark.parametrize("zipped", [True, False])
def test_torch_dtypes(tmp_path, zipped):
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict(
        f32=torch.randn(3, 4, generator=g), f64=torch.randn(5, generator=g, dtype=torch.float64),
        f16=torch.randn(2, 3, generator=g).half(), bf16=torch.randn(7, generator=g).bfloat16(),
        i64=torch.arange(-5, 5), i32=torch.arange(6, dtype=torch.int32).reshape(2, 3),
        u8=torch.tensor([0, 7, 255], dtype=torch.uint8), i8=torch.tensor([-128, 0, 127], dtype=torch.int8),
        i16=torch.tensor([-3, 300], dtype=torch.int16), b=torch.tensor([True, False, True]),
        c64=torch.tensor([1 + 2j, -3j], dtype=torch.complex64), u16=torch.tensor([1, 65535], dtype=torch.uint16),
        nan=torch.tensor([float("nan"), float("inf"), -0.0]))
    if not zipped:  # uint16 has no typed storage, which the legacy format needs
        del sd["u16"]
    got = torch_roundtrip(tmp_path, sd, zipped=zipped)
    assert got["bf16"].dtype == np.float32 and (not zipped or got["u16"].dtype == np.uint16)


@pytest.mark.parametrize("zipped", [True, False])
def test_torch_shapes_and_views(tmp_path, zipped):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    got = torch_roundtrip(tmp_path, {
        "scalar": torch.tensor(3.25), "empty": torch.zeros(0, 5), "empty3": torch.ones(2, 0, 3),
        "transposed": base.t(), "sliced": base[1:3, ::2], "column": base[:, 4], "expanded": torch.ones(3, 1).expand(3, 4),
        "shared_a": base[0], "shared_b": base[2:], "whole": base, "param": torch.nn.Parameter(torch.randn(2, 2)),
        "plain": [1, 2.5, "x", None, True, {"nested": (1, 2)}]}, zipped=zipped)
    assert got["scalar"].shape == () and got["scalar"] == 3.25
    assert got["transposed"].flags.writeable  # copies, not views of a shared buffer
    got["shared_a"][0] = -1
    assert got["whole"][0, 0] == 0 and got["shared_b"][0, 0] == 12


@pytest.mark.parametrize("zipped", [True, False])
def test_torch_model_state_dict(tmp_path, zipped):
    sd = small_model().state_dict()
    got = torch_roundtrip(tmp_path, sd, zipped=zipped)
    assert isinstance(got, collections.OrderedDict) and got["1.num_batches_tracked"].dtype == np.int64
    assert got._metadata == sd._metadata  # state_dict's version info survives, as with torch.load


@pytest.mark.parametrize("zipped", [True, False])
def test_torch_mdistiller_layout(tmp_path, zipped):
    got = torch_roundtrip(tmp_path, mdistiller_checkpoint(), "ckpt_epoch_240.pth", zipped)
    assert got["epoch"] == 240 and got["best_acc"].shape == () and float(got["best_acc"]) == 73.5
    assert "momentum_buffer" in got["optimizer"]["state"][0]


def test_torch_big_endian_and_bounds(tmp_path):
    values = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    ok = write_torch_zip(tmp_path / "big.pth", {"w": tensor_v2(StorageRef(torch.FloatStorage, "0", 3), 0, (3,), (1,))},
                         {"0": values.astype(">f4").tobytes()}, byteorder="big")
    assert_same(safe_pickle.load(ok), {"w": values})
    assert_same(to_numpy(torch.load(ok, weights_only=True)), {"w": values})
    outside = write_torch_zip(tmp_path / "outside.pth",
                              {"w": tensor_v2(StorageRef(torch.FloatStorage, "0", 3), 1, (3,), (1,))},
                              {"0": values.tobytes()})
    unreadable(outside, "view")
    short = write_torch_zip(tmp_path / "short.pth", {"w": tensor_v2(StorageRef(torch.FloatStorage, "0", 4), 0, (3,), (1,))},
                            {"0": values.tobytes()})
    unreadable(short, "bytes")
    missing = write_torch_zip(tmp_path / "missing.pth",
                              {"w": tensor_v2(StorageRef(torch.FloatStorage, "9", 3), 0, (3,), (1,))}, {})
    unreadable(missing, "missing")


def test_torch_loads_without_torch(tmp_path):
    """The Jittor side has no torch: a torch file is read with torch unimportable."""
    src, out = tmp_path / "teacher.pth", tmp_path / "out.pkl"
    ckpt = mdistiller_checkpoint()
    torch.save(ckpt, src)
    code = ("import sys, pickle; sys.modules['torch'] = None; from common import safe_pickle; "
            f"obj = safe_pickle.load({str(src)!r}); assert 'torch' not in [m for m in sys.modules if sys.modules[m]]; "
            f"pickle.dump(obj, open({str(out)!r}, 'wb'))")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
    with open(out, "rb") as f:
        assert_same(pickle.load(f), to_numpy(torch.load(src, weights_only=True)))  # our own file


def test_torch_unsupported(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:-3])  # the last storage cut short
    unreadable(legacy, "truncated")
    sparse = tmp_path / "sparse.pth"
    torch.save({"s": torch.eye(3).to_sparse()}, sparse)
    unreadable(sparse, "_rebuild_sparse_tensor")
    truncated = tmp_path / "truncated.pth"
    torch.save(small_model().state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:3000])
    unreadable(truncated)
    no_pickle = tmp_path / "other.zip"
    with zipfile.ZipFile(no_pickle, "w") as z:
        z.writestr("a/readme.txt", "hello")
    unreadable(no_pickle, "torch.save")


# ------------------------------------------------------------------ plain pickles

def numpy_dict():
    rng = np.random.default_rng(0)
    return {"conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "f64": rng.normal(size=5),
            "f16": np.arange(4, dtype=np.float16), "i64": np.arange(-3, 3), "u8": np.arange(250, 256, dtype=np.uint8),
            "bool": np.array([True, False]), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            "view": np.arange(10)[::3], "scalar0d": np.array(2.5), "empty": np.zeros((0, 3), np.float32),
            "big_endian": np.arange(3, dtype=">i4"), "text": np.array(["ab", "cde"]), "bytes": np.array([b"x", b"yz"]),
            "np_float": np.float64(0.125), "np_int": np.int64(7), "np_f32": np.float32(1.5),
            "epoch": 12, "best": 70.25, "name": "run", "none": None, "flag": False, "raw": b"\x00\xff",
            "list": [1, [2, {"a": np.ones(2)}]], "tuple": (1, "two"), "od": collections.OrderedDict(b=1, a=2)}


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_numpy_pickles(tmp_path, protocol):
    obj = numpy_dict()
    path = tmp_path / f"legacy_p{protocol}.ckpt"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    assert_same(safe_pickle.load(path), pickle.loads(path.read_bytes()))


def test_jittor_file(tmp_path):
    prepare_jittor()
    import jittor as jt
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = str(tmp_path / "model.pkl")
    jt.save({"fc.weight": jt.array(w), "fc.bias": np.ones(2, np.float32), "epoch": 3}, path)
    got = safe_pickle.load(path)
    assert_same(got, {"fc.weight": w, "fc.bias": np.ones(2, np.float32), "epoch": 3})
    damaged = bytearray(open(path, "rb").read())
    damaged[len(damaged) // 2] ^= 1
    with open(path, "wb") as f:
        f.write(bytes(damaged))
    unreadable(path, "checksum")


@pytest.mark.parametrize("encoding", ["latin1", "bytes"])
def test_cifar10_batch(encoding, tiny_data):
    """A batch file as the tests' CIFAR-10 writes it (conftest); the official Python 2 layout is py2_pickle below."""
    path = os.path.join(tiny_data, "cifar-10-batches-py", "test_batch")
    with open(path, "rb") as f:
        want = pickle.load(f, encoding=encoding)
    assert_same(safe_pickle.load(path, encoding=encoding), want)


def py2_pickle():
    """What Python 2's cPickle.dump(batch, f, 2) writes for a CIFAR batch: str (not unicode) keys and
    values, numpy arrays as _reconstruct + a dtype + BINSTRING data, a list of labels. Written opcode by opcode."""
    def s(text):  # SHORT_BINSTRING / BINSTRING: a Python 2 str
        raw = text if isinstance(text, bytes) else text.encode("latin1")
        return (b"U" + bytes([len(raw)]) + raw) if len(raw) < 256 else (b"T" + len(raw).to_bytes(4, "little") + raw)

    data = np.arange(2 * 12, dtype=np.uint8).reshape(2, 12) * 10
    array = (b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85q\x03" + s("b") + b"\x87q\x04R"
             + b"(K\x01K\x02K\x0c\x86cnumpy\ndtype\nq\x05" + s("u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + s("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
             + b"\x89" + s(data.tobytes()) + b"tb")
    body = (b"\x80\x02}q\x00(" + s("data") + array + s("labels") + b"](K\x03K\tK\x00e"
            + s("batch_label") + s("testing batch 1 of 1") + s("filenames") + b"](" + s("caf\xe9.png") + s("b.png") + b"eu.")
    return body, data


@pytest.mark.parametrize("encoding", ["latin1", "bytes"])
def test_python2_pickle(tmp_path, encoding):
    body, data = py2_pickle()
    path = tmp_path / "data_batch_1"
    path.write_bytes(body)
    want = pickle.loads(body, encoding=encoding)
    got = safe_pickle.load(path, encoding=encoding)
    assert_same(got, want)
    key = "data" if encoding == "latin1" else b"data"
    assert np.array_equal(got[key], data)


def test_python3_protocol2_bytes(tmp_path):
    """Python 3's protocol 2 writes bytes (and numpy's array bytes) as _codecs.encode(text, 'latin1')."""
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"key": b"\x00\x80\xff", "labels": [1, 2]}
    path = tmp_path / "p2.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    assert b"_codecs" in path.read_bytes()
    for encoding in ("ASCII", "latin1", "bytes"):
        assert_same(safe_pickle.load(path, encoding=encoding), pickle.loads(path.read_bytes(), encoding=encoding))


def test_not_a_pickle(tmp_path):
    for name, raw in [("empty.ckpt", b""), ("text.ckpt", b"hello world\n"), ("half.ckpt", pickle.dumps(numpy_dict(), 4)[:500])]:
        (tmp_path / name).write_bytes(raw)
        unreadable(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        safe_pickle.load(tmp_path / "nowhere.ckpt")


# ------------------------------------------------------------------ malicious files: refused, and nothing ran

def marker_command(marker):
    return f"open({str(marker)!r}, 'w').close()"


def payloads(marker):
    """(name that must be refused, pickle bytes) pairs; each creates marker when pickle.loads runs it."""
    import builtins
    code = marker_command(marker)
    text = pickle.dumps(code, protocol=0)[1:-2]  # the command as a protocol-0 string literal, e.g. V...
    return {
        "posix.system": pickle.dumps(Call(os.system, f"touch {marker}"), protocol=2),
        "builtins.eval": pickle.dumps(Call(builtins.eval, code), protocol=4),
        "builtins.exec": pickle.dumps(Call(builtins.exec, code), protocol=5),
        "subprocess.Popen": pickle.dumps(Call(subprocess.Popen, ["touch", str(marker)]), protocol=2),
        # getattr(__import__('builtins'), 'exec')(code): only names, no objects of the attacker's
        "builtins.getattr": b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'builtins'\ntRS'exec'\ntR(V" + text + b"\ntR.",
        "builtins.__import__": b"cbuiltins\n__import__\n(S'os'\ntR.",
        "os.system": b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.",
    }


@pytest.mark.parametrize("name", ["posix.system", "builtins.eval", "builtins.exec", "subprocess.Popen",
                                  "builtins.getattr", "builtins.__import__", "os.system"])
def test_malicious_pickle_refused(tmp_path, name):
    marker = tmp_path / "MARKER"
    raw = payloads(marker)[name]
    path = tmp_path / "evil.ckpt"
    path.write_bytes(raw)
    refused(path, name)
    assert not marker.exists()
    if name != "builtins.__import__":  # the payloads are live: plain pickle.load does run them
        result = pickle.loads(raw)
        if isinstance(result, subprocess.Popen):
            result.wait()
        assert marker.exists()


def test_payload_nested_in_weights(tmp_path):
    marker = tmp_path / "MARKER"
    obj = {"model": {"w": np.ones(3), "b": np.zeros(2)}, "epoch": 3,
           "extra": [1, {"deep": Call(os.system, f"touch {marker}")}]}
    for protocol in (2, 4, 5):
        path = tmp_path / f"nested{protocol}.ckpt"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        refused(path, "posix.system")
    assert not marker.exists()


def test_malicious_torch_files(tmp_path):
    marker = tmp_path / "MARKER"
    sd = small_model().state_dict()
    path = tmp_path / "evil.pth"
    torch.save({"model": sd, "x": Call(os.system, f"touch {marker}")}, path)  # torch.save pickles anything
    refused(path, "posix.system")
    legacy = tmp_path / "evil_legacy.pth"  # torch < 1.6's format carries a payload just as well
    torch.save({"model": sd, "x": Call(os.system, f"touch {marker}")}, legacy, _use_new_zipfile_serialization=False)
    refused(legacy, "posix.system")
    swapped = tmp_path / "swapped.pth"  # a real torch file whose data.pkl is replaced
    torch.save(sd, swapped)
    with zipfile.ZipFile(swapped) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(swapped, "w") as z:
        for n, raw in entries.items():
            z.writestr(n, pickle.dumps(Call(eval, marker_command(marker)), 2) if n.endswith("/data.pkl") else raw)
    refused(swapped, "builtins.eval")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # torch's own reader refuses it too
        torch.load(swapped, weights_only=True)


def test_numpy_names_off_the_whitelist(tmp_path):
    np.save(tmp_path / "x.npy", np.ones(2))
    cases = {
        "numpy.load": b"cnumpy\nload\n(S'" + str(tmp_path / "x.npy").encode() + b"'\ntR.",
        "numpy.frombuffer": b"cnumpy\nfrombuffer\n(C\x04\x00\x00\x00\x00S'f4'\ntR.",
        "numpy.core.multiarray.frombuffer": b"\x80\x02cnumpy.core.multiarray\nfrombuffer\nC\x01x\x85R.",
        "numpy.lib.npyio.load": b"\x80\x04\x8c\x0fnumpy.lib.npyio\x8c\x04load\x93\x8c\x01x\x85R.",
        "numpy.save": pickle.dumps(Call(np.save, str(tmp_path / "y.npy"), np.ones(2)), protocol=4),
        "copyreg._reconstructor": b"ccopy_reg\n_reconstructor\n(ccollections\nOrderedDict\nc__builtin__\ndict\n(dtR.",
    }
    for name, raw in cases.items():
        path = tmp_path / "names.ckpt"
        path.write_bytes(raw)
        refused(path, name)


def test_torch_names_outside_torch_zip(tmp_path):
    """The tensor rebuild functions are allowed only with a torch zip's storages, not in a plain pickle."""
    path = tmp_path / "plain.ckpt"
    path.write_bytes(pickle.dumps(Call(torch._utils._rebuild_tensor_v2, np.ones(3), 0, (3,), (1,), False, None), 2))
    refused(path, "torch._utils._rebuild_tensor_v2")


def test_crafted_uses_of_whitelisted_names(tmp_path):
    """Whitelisted names with crafted arguments or opcodes raise; they never run code or corrupt numpy."""
    f8_state = b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
    cases = {
        # an object dtype whose state claims it holds no objects, then an array whose 'objects' are raw bytes
        "forged flags": (b"\x80\x02cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xff"
                         b"J\xff\xff\xff\xffK\x00tb.", "dtype"),
        "structured dtype": (pickle.dumps(np.dtype([("a", "O")]), 2), "dtype"),
        "structured dtype string": (b"\x80\x02cnumpy\ndtype\nU\x05f8,i4K\x00K\x01\x87R.", "structured"),
        "reconstruct a non-array": (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nccollections\nOrderedDict\n"
                                    b"K\x00\x85U\x01b\x87R.", "reconstructs"),
        "call ndarray": (b"\x80\x02cnumpy\nndarray\nK\x03\x85\x85R.", "calls"),
        "NEWOBJ": (b"\x80\x02ccollections\nOrderedDict\n)\x81.", "NEWOBJ"),
        "INST": (b"(icollections\nOrderedDict\n.", "INST"),
        "BUILD on a class": (b"\x80\x02ccollections\nOrderedDict\n}U\x01xK\x01sb.", "BUILD"),
        "codec": (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.", "codec"),
        "persistent id": (b"\x80\x02U\x01xQ.", "persistent"),
        "dtype used before its state": (b"\x80\x02cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nU\x02f8K\x00K\x01\x87R"
                                        b"C\x08\x00\x00\x00\x00\x00\x00\x00\x00\x86R.", "before"),
        "dtype state twice": (b"\x80\x02cnumpy\ndtype\nU\x02f8K\x00K\x01\x87R" + f8_state + b"b" + f8_state + b"b.",
                              "BUILD"),
    }
    for label, (raw, word) in cases.items():
        path = tmp_path / "crafted.ckpt"
        path.write_bytes(raw)
        refused(path, word)
    assert np.dtype("f8").byteorder == "=" and not np.dtype("f8").hasobject


def test_dtype_singletons_untouched(tmp_path):
    """dtype('f8', copy=False) would hand out numpy's shared dtype; BUILD must never change that one."""
    path = tmp_path / "singleton.ckpt"
    path.write_bytes(b"\x80\x02cnumpy\ndtype\nU\x02f8K\x00K\x00\x87R(K\x03U\x01>NNNJ\xff\xff\xff\xff"
                     b"J\xff\xff\xff\xffK\x00tb.")
    got = safe_pickle.load(path)
    assert got == np.dtype(">f8") and np.dtype("f8").byteorder == "="
