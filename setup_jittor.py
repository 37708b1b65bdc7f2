"""Make Jittor work offline on CPU, idempotently (run by `make setup`).

1. No GPU: Jittor must not probe nvcc (prepare_jittor sets nvcc_path="").
2. oneDNN: Jittor downloads oneDNN 2.2 on first import, which fails offline, and without
   it convolutions take a path about 30x slower. Debian's libdnnl-dev (oneDNN 2.6) works:
   ~/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp/ with include/ (the dnnl headers) and
   lib/libmkldnn.so (-> libdnnl.so.2) makes Jittor use it instead of downloading.
3. MPI: Jittor's data-parallel mode (mpirun -np N python jittor_/...) needs Open MPI; with
   Debian's openmpi-bin and libopenmpi-dev, Jittor finds mpicc and compiles its MPI ops.
   (torch's DDP under torchrun needs nothing more: gloo comes with torch.)
4. Import Jittor once (compiles its core, a few minutes the first time) and say whether
   it runs with oneDNN and with MPI.
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


def apt_install(packages, what):
    """apt-get install the Debian packages when we are root; otherwise say what to run."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        print(f"setup: {' '.join(packages)} not installed and cannot be installed here (needs root and apt-get); "
              f"run: sudo apt-get install -y {' '.join(packages)}")
        return
    print(f"setup: installing Debian's {' '.join(packages)} ({what}) ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    quiet = dict(stdout=subprocess.DEVNULL, env=env)
    if subprocess.call(["apt-get", "install", "-y", "-q", *packages], **quiet) != 0:
        subprocess.call(["apt-get", "update", "-q"], **quiet)
        subprocess.call(["apt-get", "install", "-y", "-q", *packages], **quiet)


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
        apt_install(["libdnnl-dev"], "oneDNN for Jittor")
        lib = system_dnnl()
    if lib is None:
        return False
    home = jittor_dnnl_dir()
    os.makedirs(os.path.join(home, "lib"), exist_ok=True)
    link(DNNL_HEADERS, os.path.join(home, "include"))
    link(lib, os.path.join(home, "lib", "libmkldnn.so"))
    return True


def provision_mpi():
    """Open MPI for Jittor's data-parallel mode: mpirun, and mpicc that Jittor compiles its MPI ops with."""
    if not (shutil.which("mpirun") and shutil.which("mpicc")):
        apt_install(["openmpi-bin", "libopenmpi-dev"], "MPI for Jittor's data-parallel mode")
    return bool(shutil.which("mpirun") and shutil.which("mpicc"))


def check_jittor():
    """Import Jittor in a fresh process, as the stage scripts do, and report its backend."""
    code = ("from common.env import prepare_jittor; prepare_jittor(); import jittor as jt; "
            "from jittor import compile_extern as ce; "
            "print('JITTOR', jt.__version__, 'onednn' if ce.mkl_ops is not None else 'no-onednn', "
            "'cuda' if jt.has_cuda else 'cpu', 'mpi' if ce.mpi is not None else 'no-mpi')")
    print("setup: importing Jittor (the first time it compiles its core: a few minutes) ...", flush=True)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    line = next((l for l in out.stdout.splitlines() if l.startswith("JITTOR")), None)
    if out.returncode != 0 or line is None:
        sys.exit("setup: importing Jittor failed:\n" + out.stdout[-3000:] + out.stderr[-3000:])
    _, version, backend, device, mpi = line.split()
    if backend == "onednn":
        print(f"setup: Jittor {version} runs WITH oneDNN on CPU ({device} available)")
    else:
        print(f"setup: WARNING: Jittor {version} runs WITHOUT oneDNN: CPU convolutions are ~30x slower "
              f"({device} available)")
    if mpi == "mpi":
        print("setup: Jittor has MPI: `mpirun -np N python jittor_/...` trains data-parallel "
              "(as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, or mpirun --allow-run-as-root)")
    else:
        print("setup: WARNING: Jittor has no MPI (no mpicc): `mpirun ... jittor_/...` will refuse to start")
    return backend == "onednn"


if __name__ == "__main__":
    if not provision_dnnl():
        print("setup: WARNING: no oneDNN for Jittor; it will use its slow convolution path")
    if not provision_mpi():
        print("setup: WARNING: no Open MPI: Jittor's data-parallel mode (mpirun) is unavailable")
    print("setup: GPU found, Jittor keeps CUDA" if has_nvidia_gpu() else
          "setup: no GPU: Jittor runs with nvcc_path='' (CPU only)")
    check_jittor()
