"""The machine: CPU threads, GPU detection, and the environment Jittor reads when it is imported."""
import os
import sys

from common.distributed import launch


def num_threads():
    """CPU threads per process, equal for both frameworks (a fair comparison): KD_THREADS, else the
    machine's cores shared among the data-parallel processes running on it (all of them for one).
    OMP_NUM_THREADS does not choose them: torch.set_num_threads and prepare_jittor override it."""
    if "KD_THREADS" in os.environ:
        return int(os.environ["KD_THREADS"])
    return max(1, (os.cpu_count() or 1) // launch().local_world_size)


def has_nvidia_gpu():
    return os.path.exists("/dev/nvidia0") or bool(os.path.isdir("/proc/driver/nvidia/gpus")
                                                  and os.listdir("/proc/driver/nvidia/gpus"))


def jittor_dnnl_dir():
    """Where Jittor looks for oneDNN before downloading it (setup_jittor.py fills it)."""
    return os.path.join(os.path.expanduser("~"), ".cache", "jittor", "mkl", "dnnl_lnx_2.2.0_cpu_gomp")


def prepare_jittor():
    """Environment Jittor reads when it is imported; call before `import jittor`.

    Without a GPU, nvcc_path="" stops Jittor from finding an installed nvcc and then
    dying on a missing libcudart. A GPU machine keeps Jittor's own CUDA detection.
    Without the oneDNN folder Jittor would try to download it (and fail offline):
    then it runs without oneDNN, and says so.
    """
    if "nvcc_path" not in os.environ and not has_nvidia_gpu():
        os.environ["nvcc_path"] = ""
    os.environ.setdefault("log_silent", "1")  # no info lines at import; compile progress still shows
    # Jittor's CPU parallelism is OpenMP: oneDNN's and jittor_/kernels.py's (the kernels Jittor
    # generates itself are single-threaded): same thread count as torch.set_num_threads(common.num_threads())
    # for a fair comparison, and the count checkpoints record (common.checkpoint.machine). Set, not defaulted:
    # an OMP_NUM_THREADS left in the shell would give Jittor other threads than torch, and resume a run
    # on other threads than its checkpoint says.
    threads = str(num_threads())
    if os.environ.get("OMP_NUM_THREADS", threads) != threads:
        print(f"note: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} is replaced by {threads} for Jittor, the threads "
              f"torch uses: set KD_THREADS to choose both", file=sys.stderr)
    os.environ["OMP_NUM_THREADS"] = threads
    # Jittor names its compile cache after the git branch around its install folder: with the venv
    # inside this repo, every branch switch would recompile everything. One fixed name instead.
    os.environ.setdefault("cache_name", "default")
    # Compile ops one at a time. Jittor's parallel op compiler runs oneDNN's conv tuner
    # (ConvTuner::forwardTune) in worker threads, and the tuner edits the shared graph: a race that
    # segfaults now and then, after which Jittor's segfault handler deadlocks (README, "Pitfalls").
    # Jittor reads every flag from an environment variable of its name when it is imported.
    os.environ.setdefault("use_parallel_op_compiler", "0")
    if "use_mkl" not in os.environ and not os.path.isfile(os.path.join(jittor_dnnl_dir(), "lib", "libmkldnn.so")):
        os.environ["use_mkl"] = "0"
        print("warning: oneDNN is not set up for Jittor (run `make setup`): "
              "Jittor uses its slow convolution path", file=sys.stderr)
