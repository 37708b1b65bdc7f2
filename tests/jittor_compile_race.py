"""Reproduce Jittor's parallel op-compiler race, and stress the repo's Jittor paths with the fix.

The cause (Jittor 1.3.11, CPU with oneDNN). Before a graph runs, Jittor compiles every op kernel
this process has not loaded yet (a kernel already on disk is only loaded, but still goes through
this step) in a pool of worker threads: `parallel_compile_all_ops`, jittor/src/parallel_compiler.cc,
flag `use_parallel_op_compiler` (default 16; threads = min(flag, RAM / 3 GB)). For a fused
convolution each worker runs oneDNN's conv tuner (`OpCompiler::do_compile` -> `TunerManager` ->
`ConvTuner::forwardTune`, opt/tuner/conv_tuner.cc), which builds an mkl_conv relay op and edits
the shared graph (`VarRelayManager::add_relay_group` -> `Node::set_inputs` -> ...). Nothing locks
it: `jittor::lock_guard` in do_compile is skipped when the process already holds the lock, and
the main thread holds it for the whole batch. Two workers editing at once corrupt the graph: a
segfault there or later (e.g. `Var::alloc` in `.numpy()`); and when a worker segfaults, Jittor's
handler calls exit() on that thread, whose exit handler waits for the thread pool's mutex while
the main thread waits in `SimpleThreads::wait_all()`: a hang at 0% CPU, still holding the compile
lock that every Jittor process of the same home waits for.

The fix (prepare_jittor): use_parallel_op_compiler=0, kernels compile serially on the main
thread. An explicit environment value still wins, which is how `repro` gets the old behaviour.

    # the race: each round is a fresh process sending many conv kernels to the compiler at once
    python tests/jittor_compile_race.py repro --rounds 25 --parallel 16   # Jittor's default (racy)
    python tests/jittor_compile_race.py repro --rounds 25 --parallel 0    # the fix
    python tests/jittor_compile_race.py repro --rounds 12 --parallel 16 --model MobileNetV2
    # the repo's Jittor paths (align.py, Jittor pytest files, training) with the fix, cold kernels
    python tests/jittor_compile_race.py stress --minutes 30

The race is timing-dependent and rare: on this project's 2-core machine, niced beside a torch
training, 25 conv rounds and 12 MobileNetV2 rounds with --parallel 16 all passed (the crashes
and the hang were seen in ~3 of 18 heavy runs). So a pass with 16 shows nothing; a failure with
16 and none with 0 would show the fix. A round fails on a crash (exit status, signal, or
"Segfault"/"Fatal Python error" in its output) or hangs: no CPU used by its process group for
--stall seconds (a deadlock sits at 0% CPU, a slow compile does not), or past --timeout.

The children run with HOME set to a private Jittor home (--home, default
/tmp/jittor_compile_race_home): Jittor's compile lock is one file per home, shared by every
cache_name, so cold compiles here would otherwise stall the other Jittor processes on the
machine (and theirs would look like hangs here); for the same reason run one mode at a time per
home. Each mode has its own cache_name ('race', 'stress'), whose first use builds Jittor's core
(~5 CPU-minutes; a copied cache rebuilds it too, see private_home). The real ~/.cache/jittor is
only read (its oneDNN folder is linked). Run it niced on a shared machine:
`nice -n 10 python tests/jittor_compile_race.py ...`. Exit status: 1 if any run crashed or hung.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# what Jittor prints when it dies in native code
CRASH_MARKERS = ("Segfault", "Segmentation fault", "Fatal Python error")
DONE = "round finished"  # a repro child's last line: without it, a round that exits 0 did not run
TAIL_LINES = 15  # lines of a failed run's output shown
# the children's HOME: a private Jittor home, so that its compile lock is theirs alone (private_home)
HOME = os.path.join(tempfile.gettempdir(), "jittor_compile_race_home")


# ---------------------------------------------------------------------------
# Jittor's cache folders
# ---------------------------------------------------------------------------

def jittor_cache_root(home):
    """<home>/.cache/jittor/jt<version>/<compiler>/<python>/<os>/<cpu>/: one folder per cache_name.

    Asked of Jittor's own helper module without importing jittor (which would compile).
    """
    code = ("import os, sys; os.environ['cache_name'] = 'default'; sys.argv = ['x']\n"
            "import jittor_utils as ju; print(os.path.dirname(ju.cache_path))")
    env = dict(os.environ, HOME=home, log_silent="1", nvcc_path="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def private_home(home, cache_name):
    """Set up `home` as a private Jittor home for the child processes (they run with HOME=home)
    and return the folder of its cache `cache_name`.

    Why: every cache_name under one home shares one compile lock (<root>/jittor.lock), which a
    process holds while it compiles; a cold-cache run in the real home would stall every other
    Jittor process on the machine, and their compiles would look like hangs here. (JITTOR_HOME is
    no way out: Jittor writes it into ~/.cache/jittor/config.json, for everyone.) oneDNN
    (~/.cache/jittor/mkl) is linked, not copied. Jittor's core is not copied either: its build
    keys hold the cache folder's path (-I"<cache>"), so a copied cache, even a copy of 'default'
    under another cache_name in the same home, rebuilds all of it (~5 CPU-minutes, once per
    home and cache_name; warm_up does it before any measured run).
    """
    jittor_dir = os.path.join(home, ".cache", "jittor")
    os.makedirs(jittor_dir, exist_ok=True)
    mkl, real_mkl = os.path.join(jittor_dir, "mkl"), os.path.join(os.path.expanduser("~"), ".cache", "jittor", "mkl")
    if not os.path.exists(mkl) and os.path.isdir(real_mkl):
        os.symlink(real_mkl, mkl)
    warm_up(home, cache_name)
    return os.path.join(jittor_cache_root(home), cache_name)


def warm_up(home, cache_name):
    """Import Jittor twice. In a new cache folder the first import builds Jittor's core, and after
    building jit_utils_core it exits with status 0 without running anything: "jit_utils updated,
    please rerun your command" (jittor/compiler.py), hidden by log_silent=1. Without this, the first
    real run in a new cache would silently do nothing and pass."""
    env = dict(os.environ, HOME=home, cache_name=cache_name)
    code = "from common.env import prepare_jittor; prepare_jittor(); import jittor"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, check=True)


def clear_kernels(cache_dir):
    """Delete the compiled op kernels (jit/; Jittor recreates it): the next run compiles them all."""
    shutil.rmtree(os.path.join(cache_dir, "jit"), ignore_errors=True)
    os.makedirs(os.path.join(cache_dir, "jit"), exist_ok=True)


def count_kernels(cache_dir):
    """Number of compiled op kernels (.so files) in a cache folder."""
    return sum(name.endswith(".so") for name in os.listdir(os.path.join(cache_dir, "jit")))


# ---------------------------------------------------------------------------
# Running a child process with a crash and hang detector
# ---------------------------------------------------------------------------

def group_cpu_seconds(pgid):
    """CPU seconds of the live processes of a process group, their reaped children's included
    (so a finished compiler still counts). A deadlocked group's total stops changing."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[2] is pgrp; utime, stime, cutime, cstime are 11 to 14
            total += sum(map(int, fields[11:15])) / os.sysconf("SC_CLK_TCK")
    return total


def run_watched(cmd, env, stall, timeout, cwd=ROOT):
    """Run cmd in its own process group. Returns (verdict, seconds, output).

    verdict: 'ok'; 'crashed' (non-zero exit, a signal, or a crash marker in the output);
    'hung': the group used no CPU for `stall` s (the deadlock sits at 0% CPU; a cold compile
    does not), or ran past `timeout` s. The detector kills the whole process group.
    """
    start = time.time()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        cpu, last_progress = -1.0, time.time()
        while proc.poll() is None:
            now, used = time.time(), group_cpu_seconds(proc.pid)
            if abs(used - cpu) > 0.005:  # changed: a process ran, or one exited
                cpu, last_progress = used, now
            if now - last_progress > stall or now - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(1)
        code = proc.returncode
        log.seek(0)
        output = log.read()
    seconds = time.time() - start
    if code == -signal.SIGKILL and (time.time() - last_progress > stall or seconds > timeout):
        return "hung", seconds, output
    if code != 0 or any(marker in output for marker in CRASH_MARKERS):
        reason = f"signal {-code}" if code < 0 else f"exit {code}" if code else "crash message"
        return f"crashed ({reason})", seconds, output
    return "ok", seconds, output


def tail(output, lines=TAIL_LINES):
    """The last lines of a run's output, indented (progress lines with \\r collapsed)."""
    text = [line.split("\r")[-1] for line in output.rstrip().splitlines()]
    return "\n".join("    | " + line for line in text[-lines:])


def summary(results, noun="rounds"):
    """'N rounds: X ok, Y crashed, Z hung' plus the mean and max seconds."""
    ok = sum(v == "ok" for v, _ in results)
    crashed = sum(v.startswith("crashed") for v, _ in results)
    hung = sum(v == "hung" for v, _ in results)
    seconds = [s for _, s in results]
    return (f"{len(results)} {noun}: {ok} ok, {crashed} crashed, {hung} hung "
            f"(seconds per {noun[:-1]}: mean {sum(seconds) / max(len(seconds), 1):.1f}, max {max(seconds, default=0):.1f})")


# ---------------------------------------------------------------------------
# repro: many fresh conv kernels compiled in one parallel batch
# ---------------------------------------------------------------------------

def conv_variants(rng):
    """Every (kernel, stride, padding, dilation), shuffled by the round's seed.

    Jittor's kernel keys hold these (not the tensor sizes), so each variant is a kernel of its own:
    forward, backward-to-input and backward-to-weight, each with its oneDNN relay op.
    """
    variants = [(k, s, p, d) for k in range(1, 6) for s in (1, 2) for p in range(3) for d in (1, 2) if p < k * d]
    rng.shuffle(variants)
    return variants


def child(args):
    """One round, in its own process. `graphs` times: one input feeding `convs` convolutions of
    variants not yet used in this process (new sizes and channels too), forward and backward,
    fetched in one sync. So every conv kernel of the graph goes to the parallel compiler in one
    batch, and their conv tuners all edit the shared input's node at the same time."""
    import numpy as np
    from common.env import prepare_jittor
    prepare_jittor()
    import jittor as jt

    rng = np.random.default_rng(args.seed)
    variants = conv_variants(rng)
    print(f"use_parallel_op_compiler={jt.flags.use_parallel_op_compiler} cache={jt.flags.cache_path}", flush=True)
    if args.model:
        return model_round(args, jt, rng)
    for g in range(args.graphs):
        n, cin, size = int(rng.integers(1, 5)), int(rng.integers(1, 9)), int(rng.integers(12, 25))
        x = jt.array(rng.standard_normal((n, cin, size, size)).astype("float32"))
        loss, weights = 0, []
        for k, s, p, d in variants[g * args.convs:(g + 1) * args.convs]:
            w = jt.array(rng.standard_normal((int(rng.integers(1, 9)), cin, k, k)).astype("float32"))
            y = jt.nn.conv2d(x, w, stride=s, padding=p, dilation=d)
            loss = loss + (y * y).mean()
            weights.append(w)
        grads = jt.grad(loss, [x, *weights])
        jt.sync([loss, *grads])
        total = float(loss.numpy()) + sum(float(gr.numpy().sum()) for gr in grads)
        print(f"graph {g}: {len(weights)} convs ok ({total:.3g})", flush=True)
    print(DONE, flush=True)


def model_round(args, jt, rng):
    """The --model variant of a round: one forward and backward of each named repo model
    (jittor_/models.py), each model's kernels going to the parallel compiler together."""
    from jittor_ import models
    for name in args.model.split(","):
        model = models.build_model(name, seed=args.seed)
        x = jt.array(rng.standard_normal((int(rng.integers(2, 9)), 3, 32, 32)).astype("float32"))
        out = model(x)
        loss = (out * out).mean()
        grads = jt.grad(loss, model.parameters())
        jt.sync([loss, *grads])
        print(f"{name}: loss {float(loss.numpy()):.3g}, {len(grads)} gradients", flush=True)
    print(DONE, flush=True)


def child_cmd(args, seed):
    cmd = [sys.executable, os.path.abspath(__file__), "_child", "--seed", str(seed),
           "--graphs", str(args.graphs), "--convs", str(args.convs)]
    return cmd + (["--model", args.model] if args.model else [])


def repro(args):
    cache_dir = private_home(args.home, args.cache_name)
    env = dict(os.environ, HOME=args.home, use_parallel_op_compiler=str(args.parallel), cache_name=args.cache_name)
    what = f"model {args.model}" if args.model else f"{args.graphs} graphs x {args.convs} convs"
    print(f"repro: {args.rounds} rounds, use_parallel_op_compiler={args.parallel}, "
          f"{what} per round, seeds {args.seed}..., "
          f"cache {cache_dir}, hang: {args.stall}s without CPU or {args.timeout}s", flush=True)
    results = []
    for r in range(args.rounds):
        seed = args.seed + r
        if args.clear:
            clear_kernels(cache_dir)
        verdict, seconds, output = run_watched(child_cmd(args, seed), env, args.stall, args.timeout)
        if verdict == "ok" and DONE not in output:
            verdict = "crashed (no finish line)"
        results.append((verdict, seconds))
        print(f"round {r + 1:3d} seed {seed}: {verdict:18s} {seconds:6.1f}s", flush=True)
        if verdict != "ok":
            print(tail(output), flush=True)
    print(summary(results), flush=True)
    return 0 if all(v == "ok" for v, _ in results) else 1


# ---------------------------------------------------------------------------
# stress: the repo's Jittor paths with the fix, each from a cleared kernel cache
# ---------------------------------------------------------------------------

def write_tiny_data(folder, env):
    """The tests' tiny generated CIFAR-10 (tests/conftest.py), written by a subprocess: conftest
    imports jittor, whose SIGCHLD handler would quit this process when the hang detector kills a run."""
    code = f"import sys; sys.path.insert(0, 'tests'); import conftest; conftest.write_tiny_cifar({folder!r})"
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True)
    return folder


def stress_jobs(data_dir, work_dir):
    """(name, command) of the Jittor paths exercised in turn."""
    py = sys.executable
    align = [py, "align.py", "--steps", "3", "--batch-size", "16", "--train-size", "64",
             "--no-float64", "--data-dir", data_dir]
    return [
        ("align teacher", align + ["--stage", "teacher"]),
        ("align dkd", align + ["--stage", "dkd"]),
        ("pytest models/zoo/align", [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                     "tests/test_models.py", "tests/test_zoo.py", "tests/test_align.py"]),
        ("train_teacher jittor", [py, "jittor_/train_teacher.py", "--epochs", "1", "--train-size", "192",
                                  "--val-size", "64", "--data-dir", data_dir, "--name", "stress/t"]),
    ]


def stress(args):
    cache_dir = private_home(args.home, args.cache_name)
    work_dir = tempfile.mkdtemp(prefix="jt_stress_")
    # no use_parallel_op_compiler here: the entry points' own default (the fix) applies
    env = {k: v for k, v in os.environ.items() if k != "use_parallel_op_compiler"}
    env.update(HOME=args.home, cache_name=args.cache_name, KD_LOG_DIR=os.path.join(work_dir, "log"),
               KD_CKPT_DIR=os.path.join(work_dir, "ckpt"), KD_IMG_DIR=os.path.join(work_dir, "img"))
    data_dir = args.data_dir or write_tiny_data(os.path.join(work_dir, "data"), env)
    jobs = stress_jobs(data_dir, work_dir)
    print(f"stress: {args.minutes} min from {ROOT}, cache {cache_dir} (cleared before each run), "
          f"data {data_dir}, hang: {args.stall}s without CPU or {args.timeout}s", flush=True)
    results, per_job = [], {}
    end = time.time() + 60 * args.minutes
    i = 0
    while time.time() < end:
        name, cmd = jobs[i % len(jobs)]
        clear_kernels(cache_dir)
        verdict, seconds, output = run_watched(cmd, env, args.stall, args.timeout)
        results.append((verdict, seconds))
        per_job.setdefault(name, []).append((verdict, seconds))
        print(f"{time.strftime('%H:%M:%S')} run {i + 1:3d} {name:24s} {verdict:18s} {seconds:6.1f}s "
              f"({count_kernels(cache_dir)} kernels compiled)", flush=True)
        print(tail(output, TAIL_LINES if verdict != "ok" else 1), flush=True)
        i += 1
    for name, res in per_job.items():
        print(f"  {name:24s} {summary(res, 'runs')}")
    print(summary(results, "runs"), flush=True)
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0 if all(v == "ok" for v, _ in results) else 1


# ---------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("repro", help="fresh processes, each sending many conv kernels to the op compiler at once")
    p.add_argument("--rounds", type=int, default=25, help="processes to run (default 25)")
    p.add_argument("--parallel", type=int, required=True,
                   help="use_parallel_op_compiler of the child: 16 = Jittor's default (races), 0 = the fix")
    p.add_argument("--stall", type=float, default=60, help="hang detector: seconds without CPU use before a round is killed (default 60)")
    p.add_argument("--timeout", type=float, default=900, help="hard limit: seconds before a round is killed as hung (default 900)")
    p.add_argument("--graphs", type=int, default=2, help="graphs per round, each compiled as one batch (default 2)")
    p.add_argument("--convs", type=int, default=26, help="convolutions per graph, each a kernel variant new to the process (default 26; 52 variants in all)")
    p.add_argument("--seed", type=int, default=0, help="seed of round 1; round r uses seed + r - 1 (default 0)")
    p.add_argument("--model", help="instead of the random convs: forward and backward of these jittor_ models, "
                   "comma-separated (e.g. MobileNetV2,ShuffleV2)")
    p.add_argument("--clear", action="store_true", help="also clear the kernel cache before each round")
    p.add_argument("--cache-name", default="race", help="Jittor cache_name used (default race)")
    p.add_argument("--home", default=HOME, help=f"private HOME of the child processes (default {HOME})")

    p = sub.add_parser("stress", help="loop over the repo's Jittor paths, cold kernel cache each time, with the fix")
    p.add_argument("--minutes", type=float, default=30, help="how long to keep starting runs (default 30)")
    p.add_argument("--stall", type=float, default=120, help="hang detector: seconds without CPU use before a run is killed (default 120)")
    p.add_argument("--timeout", type=float, default=1800, help="hard limit: seconds before a run is killed as hung (default 1800)")
    p.add_argument("--data-dir", help="folder with cifar-10-batches-py/ (default: the tests' tiny generated CIFAR)")
    p.add_argument("--cache-name", default="stress", help="Jittor cache_name used (default stress)")
    p.add_argument("--home", default=HOME, help=f"private HOME of the child processes (default {HOME})")

    return parser.parse_args(argv)


def parse_child_args(argv):
    """`_child ...`: one repro round, started by `repro` (child_cmd); not for direct use."""
    p = argparse.ArgumentParser(prog="jittor_compile_race.py _child")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--graphs", type=int, required=True)
    p.add_argument("--convs", type=int, required=True)
    p.add_argument("--model")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        return child(parse_child_args(argv[1:]))
    args = parse_args(argv)
    return {"repro": repro, "stress": stress}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
