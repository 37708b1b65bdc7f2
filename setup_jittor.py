"""Make Jittor work offline on CPU, idempotently (run by `make setup`).

1. No GPU: Jittor must not probe nvcc (prepare_jittor sets nvcc_path="").
2. oneDNN: Jittor downloads oneDNN 2.2 on first import, which fails offline, and without
   it convolutions take a path about 30x slower. Debian's libdnnl-dev (oneDNN 2.6) works:
   ~/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp/ with include/ (the dnnl headers) and
   lib/libmkldnn.so (-> libdnnl.so.2) makes Jittor use it instead of downloading.
3. Import Jittor once (compiles its core, a few minutes the first time) and say whether
   it runs with oneDNN.
"""
import os
import shutil
import subprocess
import sys

from common.paths import ROOT
from common.env import has_nvidia_gpu, jittor_dnnl_dir

DNNL_HEADERS = "/usr/include/oneapi/dnnl"
DNNL_LIBS = ["/usr/lib/x86_64-linux-gnu/libdnnl.so.2", "/usr/lib/aarch64-linux-gnu/libdnnl.so.2"]


def system_dnnl():
    lib = next((p for p in DNNL_LIBS if os.path.exists(p)), None)
    return lib if lib and os.path.isfile(os.path.join(DNNL_HEADERS, "dnnl.hpp")) else None


def install_libdnnl():
    """apt-get install libdnnl-dev when we are root; otherwise say what to run."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        print("setup: libdnnl-dev is not installed and cannot be installed here (needs root and apt-get); "
              "run: sudo apt-get install -y libdnnl-dev")
        return
    print("setup: installing Debian's libdnnl-dev (oneDNN) for Jittor ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    quiet = dict(stdout=subprocess.DEVNULL, env=env)
    if subprocess.call(["apt-get", "install", "-y", "-q", "libdnnl-dev"], **quiet) != 0:
        subprocess.call(["apt-get", "update", "-q"], **quiet)
        subprocess.call(["apt-get", "install", "-y", "-q", "libdnnl-dev"], **quiet)


def link(target, path):
    """Create or fix a symlink path -> target (idempotent)."""
    if os.path.islink(path) and os.readlink(path) == target:
        return
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    os.symlink(target, path)


def provision_dnnl():
    lib = system_dnnl()
    if lib is None:
        install_libdnnl()
        lib = system_dnnl()
    if lib is None:
        return False
    home = jittor_dnnl_dir()
    os.makedirs(os.path.join(home, "lib"), exist_ok=True)
    link(DNNL_HEADERS, os.path.join(home, "include"))
    link(lib, os.path.join(home, "lib", "libmkldnn.so"))
    return True


def check_jittor():
    """Import Jittor in a fresh process, as the stage scripts do, and report its backend."""
    code = ("from common.env import prepare_jittor; prepare_jittor(); import jittor as jt; "
            "from jittor import compile_extern as ce; "
            "print('JITTOR', jt.__version__, 'onednn' if ce.mkl_ops is not None else 'no-onednn', "
            "'cuda' if jt.has_cuda else 'cpu')")
    print("setup: importing Jittor (the first time it compiles its core: a few minutes) ...", flush=True)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    line = next((l for l in out.stdout.splitlines() if l.startswith("JITTOR")), None)
    if out.returncode != 0 or line is None:
        sys.exit("setup: importing Jittor failed:\n" + out.stdout[-3000:] + out.stderr[-3000:])
    _, version, backend, device = line.split()
    if backend == "onednn":
        print(f"setup: Jittor {version} runs WITH oneDNN on CPU ({device} available)")
    else:
        print(f"setup: WARNING: Jittor {version} runs WITHOUT oneDNN: CPU convolutions are ~30x slower "
              f"({device} available)")
    return backend == "onednn"


if __name__ == "__main__":
    if not provision_dnnl():
        print("setup: WARNING: no oneDNN for Jittor; it will use its slow convolution path")
    print("setup: GPU found, Jittor keeps CUDA" if has_nvidia_gpu() else
          "setup: no GPU: Jittor runs with nvcc_path='' (CPU only)")
    check_jittor()
