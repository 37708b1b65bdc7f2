"""The main job: teacher, then CE / KD / DKD / FitNet / AT students, in both frameworks; test all; print the tables.

    python run_all.py                      # quick preset (a few minutes on 2 CPU cores)
    python run_all.py --preset full        # the original setting, seeds 0, 1, 2 (hours on CPU)
    python run_all.py --preset full --tag beta --beta-sweep 0 0.3 0.5 1 1.5 2 --teacher-from full --seeds 1  # DKD beta sweep
    python run_all.py --preset full --resume --parallel   # continue an interrupted run, both frameworks at once
    python run_all.py --preset full --tag rdrop --seeds 1 --methods kd dkd --teacher-args "--rdrop 5 --dropout 0.3" \
        --against full                     # an R-Drop teacher and its students, against the plain ones
    python run_all.py --preset full --methods ce kd --dot-methods kd   # and a KD student trained with DOT
    python run_all.py --preset vit-quick   # the transformer track: a ViT teacher, CE / R-Drop / DeiT / TinyBERT students

Each stage is its own process (torch_/... or jittor_/... script), so the frameworks never
share a process. Runs are named <tag>/<stage>_s<seed> (tag = the preset unless --tag):
TensorBoard events and the run's one result record (log/<tag>/<run>/<framework>/result.json,
common/results.py: training outcome, then test.py's metrics) in log/<tag>/..., checkpoints in
ckpt/<tag>/.... At the end it runs report.py for the tag, which prints one narrow table (test top-1,
mean +- std over seeds, jittor - torch, the gain over the CE student) and names its report file,
log/<tag>/report.md: every table (val top-1, |delta| / seed std, the seconds per stage with the first
epoch, Jittor's kernel compilation, apart) and the overlaid curves img/<tag>_<stage>.png. The tables
also go into the docs/ page holding the tag's markers (the full run's and the beta sweep's do).

--resume makes long runs survivable: a stage whose record is finished and tested is not run again
(once every flag the job gives it holds the record's value: otherwise the job stops and names the flag),
and a stage with a checkpoint continues after its last finished epoch (the stage's own --resume).
A stage whose loss became NaN exits with DIVERGED_EXIT (3) and its record says at which epoch: the
job counts it as diverged and goes on (a point of a beta sweep, say), and --resume does not run it
again; a diverged teacher stops the job (its students have nothing to learn). Any other failure of a
stage stops the job.
--nproc N runs every stage data-parallel on N processes with the frameworks' own launchers (torchrun
for torch, mpirun for Jittor); the results are those of one process (README, "Data-parallel").
--parallel runs the two frameworks at the same time, each on half of the CPU threads
(KD_THREADS), which keeps both cores busy while Jittor runs its single-threaded kernels. When
one framework fails, the other's running stage is stopped too (its checkpoints stay: --resume
continues it) and the job reports both.
"""
import argparse
import os
import shlex
import subprocess
import sys
import threading
import time

from common.checkpoint import ckpt_path
from common.config import (add_data_dir, CNN_TEACHER_FROM, DEFAULT_METHODS, DOT_METHODS, flag_name, flag_text,
                           FRAMEWORKS, MDISTILLER_DOT_DELTA, METHOD_NAMES, OWN_PAIR_DOT_DELTA, PRESET_SEEDS, PRESETS,
                           VIT_STUDENTS)
from common.distributed import launcher_command
from common.errors import DIVERGED_EXIT, UserError
from common.paths import ROOT
from common.env import num_threads
from common.results import read_result, result_path
import report

class StageFailed(RuntimeError):
    """A stage exited with an error: the job stops (its output above says why)."""


STOP = threading.Event()  # --parallel: set when one framework failed; the other stops its stage


def run(cmd, env=None, may_diverge=False):
    """Run one stage, streaming its output; returns its seconds, or None when it diverged (exit
    DIVERGED_EXIT) and may_diverge. Raise StageFailed if it fails otherwise or STOP is set meanwhile."""
    if STOP.is_set():
        raise StageFailed(f"not started because the other framework failed: {' '.join(cmd)}")
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    while proc.poll() is None:
        if STOP.wait(0.5):
            proc.terminate()  # a stage killed at any moment resumes exactly (--resume)
            proc.wait()
            raise StageFailed(f"stopped because the other framework failed: {' '.join(cmd)}")
    if proc.returncode == DIVERGED_EXIT and may_diverge:
        return None
    if proc.returncode != 0:
        raise StageFailed(f"stage failed (exit {proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - start


def is_diverged(record):
    return bool(record and record["diverged"])


def is_tested(record):
    """Trained to the end and tested: --resume has nothing left to do for this stage."""
    return bool(record and record["finished"] and record["test"])


def train_and_test(framework, name, train_cmd, test_cmd, env, launched):
    """Run a stage, then test.py on its checkpoint unless it diverged; returns (its seconds, or None
    when it diverged; its record)."""
    if is_diverged(read_result(name, framework)):  # an earlier run's, which this one replaces
        os.remove(result_path(name, framework))
    try:
        wall = run(train_cmd, env, may_diverge=True)
    except StageFailed:
        # torchrun reports any failed rank as exit 1, not 3: under a launcher the record tells
        if not (launched and is_diverged(read_result(name, framework))):
            raise
        wall = None
    record = read_result(name, framework)
    if wall is None:
        if not is_diverged(record):
            raise StageFailed(f"{name} exited with {DIVERGED_EXIT} (diverged) but its record does not say so: "
                              f"{result_path(name, framework)}")
        return None, record
    run(test_cmd, env)
    record = read_result(name, framework)
    if not is_tested(record):
        raise StageFailed(f"{name}: test.py ran, but {result_path(name, framework)} holds no test of a finished run")
    return wall, record


def stage_flags(cmd):
    """The flags a stage command gives its script, {dest: [value tokens]} (a launcher's own flags left out)."""
    flags, key = {}, None
    for token in cmd[next(i for i, t in enumerate(cmd) if t.endswith(".py")) + 1:]:
        if token.startswith("--"):  # --flag value ... or --flag=value
            key, _, value = token[2:].partition("=")
            key = key.replace("-", "_")
            flags[key] = [value] if value else []
        else:
            flags[key].append(token)
    return flags


def stale_setting(flags, config):
    """The first flag given now that a finished run's record (config) holds another value for, as (recorded, given)
    flag texts; None when all agree. Paths and placement may differ (a clone elsewhere, another device); the
    epochs may not (a finished run is not extended). The stage's own --resume compares every resolved field
    (common.config.check_resume); a finished run is not started again, so this compares what run_all gives."""
    for key, tokens in flags.items():
        if key in ("name", "resume", "data_dir", "device", "teacher"):
            continue
        field = key[3:] if key.startswith("no_") and not tokens else key
        given_text = " ".join([flag_name(key), *tokens])
        if field not in config:
            return f"a version before {flag_name(field)} existed", given_text
        saved = config[field]
        given = field == key if isinstance(saved, bool) else typed_like(saved, tokens)
        if given != saved:
            return flag_text(field, saved), given_text
    return None


def typed_like(saved, tokens):
    """A flag's value tokens typed as the record holds its value: a number, a list of numbers, a string."""
    try:
        if isinstance(saved, list):
            return [type(saved[0])(t) for t in tokens] if saved else tokens
        if isinstance(saved, (int, float)):
            return type(saved)(tokens[0])
    except (ValueError, IndexError):  # not a value of the record's type: it differs
        return tokens
    return tokens[0] if len(tokens) == 1 else tokens


def stage_script(framework, stage):
    return os.path.join(ROOT, f"{framework}_", f"{stage}.py")


def vit_students(framework, args, seed, vit_teacher):
    """The transformer track's students (common.config.VIT_STUDENTS), as run_framework's student tuples; the CNN
    teacher is the seed's teacher of the tag CNN_TEACHER_FROM names (or --cnn-teacher-from), trained by another run
    (run_framework checks that it exists when its students' turn comes)."""
    cnn_teacher = ckpt_path(f"{args.cnn_teacher_from}/teacher_s{seed}", framework)
    teachers = {None: None, "vit": vit_teacher, "cnn": cnn_teacher}
    return [(name[len("student_"):], name, method, flags + (["--teacher-model", "cifar10quick"] if kind == "cnn" else []),
             teachers[kind]) for name, (method, flags, kind) in VIT_STUDENTS.items()]


def run_framework(framework, args, seed, env=None):
    """All stages of one framework and seed; returns {stage: record}."""
    py = launcher_command(framework, args.nproc)  # python, or torchrun / mpirun ... python
    common_flags = ["--seed", str(seed), "--data-dir", args.data_dir] + (["--preset", args.preset] if args.preset else [])
    teacher_name = f"{args.tag}/teacher_s{seed}"
    records = {}
    stages = [("teacher", teacher_name, [*py, stage_script(framework, "train_teacher"), "--name", teacher_name]
               + common_flags + shlex.split(args.teacher_args))]
    if args.teacher_from:  # reuse the teacher of another run (e.g. the beta sweep uses the full run's)
        teacher_name = f"{args.teacher_from}/teacher_s{seed}"
        stages = []
        if not os.path.exists(ckpt_path(teacher_name, framework)):
            raise StageFailed(f"--teacher-from {args.teacher_from}: no teacher checkpoint "
                              f"{ckpt_path(teacher_name, framework)}; run that tag's teacher first")
    # (stage label, run name, method, flags, teacher checkpoint): the --methods students, or one DKD student per
    # swept beta, or the transformer track's students
    teacher = ckpt_path(teacher_name, framework)
    students = [(m, f"student_{m}", m, ["--beta", str(args.beta)] if m == "dkd" and args.beta is not None else [],
                 teacher if m != "ce" else None) for m in args.methods]
    students += [(f"{m} dot", f"student_{m}_dot", m, ["--dot", str(args.dot_delta)], teacher)
                 for m in args.dot_methods]
    if args.beta_sweep:
        students = [(f"dkd beta={b:g}", f"student_dkd_beta{b:g}", "dkd", ["--beta", str(b)], teacher)
                    for b in args.beta_sweep]
    if args.preset in CNN_TEACHER_FROM:
        students = vit_students(framework, args, seed, teacher)
    for label, run_name, method, flags, student_teacher in students:
        name = f"{args.tag}/{run_name}_s{seed}"
        cmd = [*py, stage_script(framework, "train_student"), "--method", method, "--name", name] + common_flags + flags
        if student_teacher:
            cmd += ["--teacher", student_teacher]
        stages.append((label, name, cmd + shlex.split(args.student_args)))
    for stage, name, cmd in stages:
        teacher_ckpt = cmd[cmd.index("--teacher") + 1] if "--teacher" in cmd else None
        if teacher_ckpt and not os.path.exists(teacher_ckpt):  # another run's teacher (--teacher-from, the ViT track)
            raise StageFailed(f"{name} needs the teacher {teacher_ckpt}, which does not exist: run that teacher's "
                              f"job first (the DeiT students of the CNN teacher: `python run_all.py --preset "
                              f"{args.cnn_teacher_from} --seeds {seed + 1} --methods ce`), or give --cnn-teacher-from TAG")
        ckpt = ckpt_path(name, framework)
        record, wall = read_result(name, framework), None
        where = report.shown(result_path(name, framework))
        kept = args.resume and (is_tested(record) or is_diverged(record))  # --resume will not run it again
        stale = kept and stale_setting(stage_flags(cmd), record["config"])
        if stale:  # a run kept by --resume must be the run this command asks for
            raise StageFailed(f"{name}: {where} was trained with {stale[0]}, this job gives {stale[1]}: "
                              f"delete it and {report.shown(ckpt)} to retrain")
        if args.resume and is_tested(record):
            print(f"[{framework}] {name}: finished earlier ({where}), not run again")
        elif args.resume and is_diverged(record):  # its checkpoint holds the blown-up weights
            print(f"[{framework}] {name}: diverged earlier ({where}), not run again "
                  f"(delete that file and the checkpoint to retry)")
        else:
            train_cmd = cmd + (["--resume"] if args.resume and os.path.exists(ckpt) else [])
            test_cmd = [*py, stage_script(framework, "test"), "--ckpt", ckpt, "--data-dir", args.data_dir]
            wall, record = train_and_test(framework, name, train_cmd, test_cmd, env, args.nproc > 1)
        if is_diverged(record):
            epoch = record["diverged"]["epoch"]
            print(f"[{framework}] {name}: diverged at epoch {epoch}" + ("" if stage == "teacher" else ", going on"))
            if stage == "teacher":
                raise StageFailed(f"the {framework} teacher {name} diverged: no student can learn from it")
            records[stage] = {"diverged": epoch, "wall": wall}
            continue
        test = record["test"]
        records[stage] = {"top1": test["top1"], "top5": test["top5"], "wall": wall,
                          "seconds": record["seconds"], "test_images_per_s": test["images_per_s"]}
    return records


def run_parallel(args, results):
    """One thread per framework, each running all its seeds; the CPU threads are split between them."""
    threads = max(1, num_threads() // len(args.frameworks) // args.nproc)
    env = dict(os.environ, KD_THREADS=str(threads))
    errors = []

    def work(framework):
        try:
            for seed in range(args.seeds):
                results[framework].append(run_framework(framework, args, seed, env))
        except StageFailed as e:
            errors.append(f"{framework}: {e}")
            STOP.set()  # do not let the other framework train on for hours: stop it, report both

    workers = [threading.Thread(target=work, args=(fw,)) for fw in args.frameworks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise StageFailed("\n       ".join(errors))


def threads_note(args):
    processes = f", {args.nproc} processes per stage" if args.nproc > 1 else ""
    if args.parallel:
        threads = max(1, num_threads() // len(args.frameworks) // args.nproc)
        return f"frameworks in parallel with {threads} CPU thread(s) each{processes}"
    return f"{max(1, num_threads() // args.nproc)} CPU thread(s) each{processes}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="settings for every stage (default quick; full = the original experiment; vit-quick and "
                             "vit-full: the transformer track, a ViT teacher and its students, docs/transformers.md)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="run every stage with seeds 0..k-1, table: mean ± std (default: 1 for the quick "
                             "preset, 3 for full)")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS), help="frameworks to run")
    parser.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=None,
                        help=f"student methods to run (default: {' '.join(DEFAULT_METHODS)}; the vit-* presets run "
                             f"common.config.VIT_STUDENTS)")
    parser.add_argument("--dot-methods", nargs="+", choices=DOT_METHODS, default=[],
                        metavar="METHOD",
                        help="also train these students with DOT (--dot DELTA), as student_<method>_dot: one process only")
    parser.add_argument("--dot-delta", type=float, default=OWN_PAIR_DOT_DELTA, metavar="DELTA",
                        help=f"DOT's delta for --dot-methods (default {OWN_PAIR_DOT_DELTA}, the own pair's by weights.py "
                             f"--dot-grid; mdistiller's {MDISTILLER_DOT_DELTA} diverges on it in the full preset)")
    parser.add_argument("--cnn-teacher-from", default=None, metavar="TAG",
                        help="the vit-* presets: the CNN teacher of the DeiT students, ckpt/TAG/teacher_s<seed>_"
                             f"<framework>.ckpt (default: {', '.join(f'{k}: {v}' for k, v in CNN_TEACHER_FROM.items())})")
    parser.add_argument("--beta", type=float, default=None, help="DKD beta (default: common.config.dkd_beta of the student, 1 for CIFAR10Simple)")
    parser.add_argument("--beta-sweep", type=float, nargs="*", default=None,
                        help="instead of the --methods students, one DKD student per beta (the original sweep: "
                             "0 0.3 0.5 1 1.5 2); the report at the end is then report.py --sweep")
    parser.add_argument("--teacher-args", default="", help="extra flags for train_teacher.py, e.g. '--epochs 10'")
    parser.add_argument("--student-args", default="", help="extra flags for train_student.py")
    parser.add_argument("--tag", default=None, help="prefix of run names (default: the preset)")
    add_data_dir(parser)  # passed to every stage and to test.py
    parser.add_argument("--teacher-from", default=None, metavar="TAG",
                        help="do not train a teacher: use ckpt/TAG/teacher_s<seed>_<framework>.ckpt of an earlier run")
    parser.add_argument("--resume", action="store_true",
                        help="skip stages that finished and were tested, or diverged (their result.json says so); "
                             "continue those with a checkpoint")
    parser.add_argument("--parallel", action="store_true",
                        help="run the frameworks at the same time, each with half of the CPU threads")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes per stage: data-parallel with torchrun (torch) and mpirun (Jittor); "
                             "the global batch is unchanged (default 1)")
    parser.add_argument("--against", default=None, metavar="TAG",
                        help="the report adds each stage's test top-1 against the same stage and seed of tag TAG")
    parser.add_argument("--no-report", action="store_true",
                        help="no figures in img/ and no docs/ page updated: the tables go only to "
                             "log/<tag>/report.md (and the narrow one to the terminal)")
    args = parser.parse_args(argv)
    args.tag = args.tag or args.preset
    if args.preset in CNN_TEACHER_FROM and (args.methods or args.beta_sweep is not None):
        parser.error(f"--preset {args.preset} runs the transformer track's students (common.config.VIT_STUDENTS): "
                     f"no --methods or --beta-sweep")
    if args.dot_methods and (args.preset in CNN_TEACHER_FROM or args.beta_sweep is not None or args.nproc > 1):
        parser.error("--dot-methods: DOT students go with --methods students of one process (no vit-* preset, "
                     "--beta-sweep or --nproc)")
    args.methods = args.methods or list(DEFAULT_METHODS)
    args.cnn_teacher_from = args.cnn_teacher_from or CNN_TEACHER_FROM.get(args.preset)
    if args.seeds is None:
        args.seeds = PRESET_SEEDS[args.preset]
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.nproc < 1:
        parser.error(f"--nproc must be at least 1, got {args.nproc}")
    return args


def main(argv=None):
    """Run every stage, then the report; returns {framework: [{stage: record} per seed]} (for callers
    in this process: the records on disk are the runs' result.json)."""
    args = parse_args(argv)
    start = time.perf_counter()
    results = {fw: [] for fw in args.frameworks}
    try:
        if args.parallel:
            run_parallel(args, results)
        else:
            for seed in range(args.seeds):
                for framework in args.frameworks:
                    results[framework].append(run_framework(framework, args, seed))
    except (StageFailed, UserError) as e:
        sys.exit(f"error: {e}")
    header = (f"preset {args.preset}, {args.seeds} seed(s), {threads_note(args)}; "
              f"total wall {time.perf_counter() - start:.0f} s")
    # report.py makes every table (one place computes every difference and ratio): the narrow one
    # printed here, the wide ones (val top-1, times with Jittor's compilation apart) in its report file
    print(f"\n{header}\n")
    try:
        report.main(["--tag", args.tag] + (["--sweep"] if args.beta_sweep else [])
                    + (["--log-only"] if args.no_report else []) + (["--against", args.against] if args.against else []))
    except UserError as e:  # a full disk while writing the figures or the report file
        sys.exit(f"error: {e}")
    return results


if __name__ == "__main__":
    main()
