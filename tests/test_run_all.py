"""The main job (run_all.py): both frameworks, the narrow table, --parallel, --resume, --teacher-from,
a diverged stage as a result and a failed one as the end."""
import json
import os
import re
import subprocess
import sys

import pytest

from common.checkpoint import ckpt_path, make_checkpoint, save_checkpoint
from common.config import MDISTILLER_DOT_DELTA, OWN_PAIR_DOT_DELTA
from common.paths import IMG_DIR, LOG_DIR
from common.results import read_result, result_path
from conftest import ROOT
from stage_runner import stage_process

pytestmark = pytest.mark.slow  # every test here runs stages, launchers or a benchmark

TINY = "--epochs 1 --train-size 200 --val-size 50 --batch-size 50"


def run_all(tiny_data, *args, check=True):
    cmd = [sys.executable, os.path.join(ROOT, "run_all.py"), "--data-dir", tiny_data,
           "--teacher-args", TINY, "--student-args", TINY, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"run_all failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def finished_top1(name, fw):
    """The test top-1 in the run's record, which must be finished and tested."""
    record = read_result(name, fw)
    assert record["finished"] and not record["diverged"], record
    return record["test"]["top1"]


def top1_of_test_py(tiny_data, tmp_path, name, fw):
    """test.py run on its own (in this process) on the run's checkpoint, its metrics copied to a file of ours (--json)."""
    out = tmp_path / f"{fw}_test.json"
    assert stage_process(fw, "test", "--ckpt", ckpt_path(name, fw), "--data-dir", tiny_data, "--json", out).returncode == 0
    with open(out) as f:
        return json.load(f)["top1"]


def ending(stdout):
    """What run_all prints once the stages are done: its header line, then report.py's lines."""
    return stdout[stdout.rindex("\npreset "):]


def narrow_rows(stdout):
    """{first cell: line} of the narrow table at the end (report.py's plain table)."""
    table = ending(stdout).split("\n\n")[2]
    return {line.split()[0]: line for line in table.splitlines()[2:]}


def test_parallel_run_then_resume_then_teacher_from(tiny_data, tmp_path):
    proc = run_all(tiny_data, "--tag", "ra", "--methods", "kd", "--parallel")
    assert "in parallel with 1 CPU thread(s) each" in proc.stdout  # the 2 threads are split
    tests = [line for line in proc.stdout.splitlines() if line.startswith("$ ") and "/test.py" in line]
    assert len(tests) == 4 and not any("--json" in line for line in tests)  # the record is test.py's output
    for fw in ("torch", "jittor"):
        finished_top1("ra/teacher_s0", fw)
        # the record's top-1 is the one test.py gives when run by hand on the student's checkpoint
        top1 = finished_top1("ra/student_kd_s0", fw)
        assert top1 == top1_of_test_py(tiny_data, tmp_path, "ra/student_kd_s0", fw)
    assert not os.path.exists(os.path.join(LOG_DIR, "ra", "summary.json"))
    # then the report: overlaid figures per stage; the terminal gets one narrow table, the rest a file
    for stage in ("teacher", "student_kd"):
        assert os.path.getsize(os.path.join(IMG_DIR, f"ra_{stage}.png")) > 5000
    end = ending(proc.stdout)
    assert max(map(len, end.splitlines())) <= 100, end
    assert set(narrow_rows(proc.stdout)) == {"teacher", "student_kd"}
    assert "gain over CE" in end and "first epoch s" not in end
    assert "marker" not in proc.stdout  # no page holds ra's markers: normal, nothing to say
    report_md = os.path.join(LOG_DIR, "ra", "report.md")
    assert end.rstrip().splitlines()[-1] == f"Every table and figure: {report_md}"
    with open(report_md, encoding="utf-8") as f:
        assert "first epoch s jittor" in f.read()  # the time table keeps Jittor's compilation apart

    # --resume: everything finished, so nothing is trained again and the table is the same
    again = run_all(tiny_data, "--tag", "ra", "--methods", "kd", "--resume")
    assert again.stdout.count("not run again") == 4
    assert "$ " not in again.stdout  # no stage command was started
    assert narrow_rows(again.stdout) == narrow_rows(proc.stdout)

    # --resume with a stage's record gone: that stage is run again, continuing its checkpoint
    os.remove(result_path("ra/student_kd_s0", "torch"))
    partial = run_all(tiny_data, "--tag", "ra", "--methods", "kd", "--frameworks", "torch", "--resume")
    assert partial.stdout.count("not run again") == 1
    assert "train_student.py --method kd" in partial.stdout and "--resume" in partial.stdout
    finished_top1("ra/student_kd_s0", "torch")

    # --teacher-from: the beta sweep reuses this run's teachers instead of training its own
    sweep = run_all(tiny_data, "--tag", "rb", "--teacher-from", "ra", "--beta-sweep", "0", "1", "--frameworks", "torch")
    assert "train_teacher.py" not in sweep.stdout
    assert ckpt_path("ra/teacher_s0", "torch") in sweep.stdout
    for beta in ("0", "1"):
        finished_top1(f"rb/student_dkd_beta{beta}_s0", "torch")
    assert set(narrow_rows(sweep.stdout)) == {"0", "1"}
    assert os.path.isfile(os.path.join(IMG_DIR, "rb_beta_sweep.png"))  # the sweep's report


def test_a_diverged_student_is_a_result_and_a_failed_stage_the_end(tiny_data, teachers):
    """A student whose loss becomes NaN (exit 3) is a result of the sweep, not the end of it: the job
    goes on, shows "diverged" and exits 0, and --resume does not run it again. A stage exiting 2 (a user
    error) ends the job with an error."""
    diverging = run_all(tiny_data, "--tag", "rd", "--teacher-from", "shared", "--beta-sweep", "999999", "0",
                        "--frameworks", "torch")
    assert diverging.returncode == 0
    record = read_result("rd/student_dkd_beta999999_s0", "torch")
    assert record["diverged"]["epoch"] >= 1 and not record["finished"] and not record["test"]
    epoch = record["diverged"]["epoch"]
    assert f"rd/student_dkd_beta999999_s0: diverged at epoch {epoch}, going on" in diverging.stdout
    finished_top1("rd/student_dkd_beta0_s0", "torch")  # the stage after it ran and was tested
    assert narrow_rows(diverging.stdout)["999999"].split()[1:4] == ["diverged", "(epoch", f"{epoch})"]
    again = run_all(tiny_data, "--tag", "rd", "--teacher-from", "shared", "--beta-sweep", "999999", "0",
                    "--frameworks", "torch", "--resume")
    assert "diverged earlier" in again.stdout and "$ " not in again.stdout

    failing = run_all(tiny_data, "--tag", "re", "--teacher-from", "shared", "--methods", "ce", "--frameworks", "torch",
                      "--student-args", f"{TINY} --no-such-flag", check=False)
    assert failing.returncode != 0 and "Traceback" not in failing.stderr, failing.stderr
    assert "error: stage failed (exit 2)" in failing.stderr
    assert read_result("re/student_ce_s0", "torch") is None and "Every table" not in failing.stdout


def test_teacher_from_a_missing_run_is_a_clear_error(tiny_data):
    """In-process: run_all's own check, before any stage starts (no process to launch)."""
    import run_all as job
    with pytest.raises(SystemExit) as exit_:
        job.main(["--data-dir", tiny_data, "--tag", "rc", "--teacher-from", "nosuchtag"])
    assert str(exit_.value.code).startswith("error: ") and "--teacher-from nosuchtag: no teacher checkpoint" in str(
        exit_.value.code)


def test_seeds_default_per_preset():
    """The quick preset runs 1 seed, the full run 3 (mean ± std); an explicit --seeds wins."""
    import run_all as job
    assert job.parse_args([]).seeds == 1
    assert job.parse_args(["--preset", "full"]).seeds == 3
    assert job.parse_args(["--preset", "full", "--seeds", "1"]).seeds == 1
    with pytest.raises(SystemExit):
        job.parse_args(["--seeds", "0"])


def test_parallel_stops_both_frameworks_when_one_fails(tiny_data):
    """--parallel: jittor fails at once (its teacher is missing); torch must not train on for all its seeds."""
    from torch_ import models as tm
    save_checkpoint(ckpt_path("rp_src/teacher_s0", "torch"),  # a teacher for torch only
                    make_checkpoint(tm.get_state(tm.build_model("cifar10quick", 0)), {"name": "rp_src/teacher_s0"},
                                    "torch", "cifar10quick", "cifar10", epoch=0))
    proc = run_all(tiny_data, "--tag", "rp", "--teacher-from", "rp_src", "--parallel", "--seeds", "2",
                   "--methods", "kd", "dkd", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "jittor: --teacher-from rp_src: no teacher checkpoint" in proc.stderr  # both are reported
    assert "torch: " in proc.stderr and "because the other framework failed" in proc.stderr
    record = read_result("rp/student_dkd_s1", "torch")
    assert not (record and record["test"])


def test_nproc_runs_every_stage_on_the_launchers_with_the_one_process_results(tiny_data, teachers):
    """--nproc 2: the CE student and test.py of each framework under torchrun / mpirun (--teacher-from conftest's
    shared teacher: none trained here); the BN-free student tests exactly as on one process. (The teacher's stage
    under the launchers: test_data_parallel, --sync-bn against one process.)"""
    runs = [run_all(tiny_data, "--tag", f"rn{n}", "--teacher-from", "shared", "--methods", "ce", "--nproc", str(n),
                    "--no-report") for n in (1, 2)]
    assert "2 processes per stage" in runs[1].stdout and "processes per stage" not in runs[0].stdout
    commands = [line for line in runs[1].stdout.splitlines() if line.startswith("$ ")]
    assert len(commands) == 4 and "train_teacher.py" not in runs[1].stdout  # per framework: the student, its test
    for line in commands:
        assert ("torch.distributed.run --standalone --nproc_per_node=2" in line) == ("/torch_/" in line)
        assert line.startswith("$ mpirun -np 2") == ("/jittor_/" in line)
    for fw in ("torch", "jittor"):
        student = [read_result(f"{tag}/student_ce_s0", fw)["test"] for tag in ("rn1", "rn2")]
        assert student[0]["n"] == student[1]["n"] == 70
        assert student[0]["top1"] == student[1]["top1"] and student[0]["per_class"] == student[1]["per_class"]


FAKE_STAGE = """import os, sys
sys.path.insert(0, {root!r})
from common.results import add_test, training_result, write_result
argv = sys.argv[1:]
if "--ckpt" in argv:  # test.py: the fake checkpoint holds its run's name
    with open(argv[argv.index("--ckpt") + 1]) as f:
        add_test(f.read(), "torch", "torch", {{"top1": 12.5, "top5": 50.0, "images_per_s": 100.0}})
    sys.exit(0)
name, code = argv[argv.index("--name") + 1], int(os.environ["FAKE_EXIT"]) if "beta9_" in argv[argv.index("--name") + 1] else 0
history = [dict(("time/" + part, 1.0) for part in ("data", "train", "eval"))]
def typed(token):
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return token
config = {{flag[2:].replace("-", "_"): typed(value) for flag, value in zip(argv, argv[1:]) if flag.startswith("--")}}
if code and os.environ["FAKE_RECORD"]:
    write_result(training_result(config, "torch", "student", history, None, {{"epoch": 2, "error": "nan"}}))
elif not code:
    write_result(training_result(config, "torch", "student", history, 30.0))
    os.makedirs(os.path.dirname(os.environ["CKPT"].format(name=name)), exist_ok=True)
    with open(os.environ["CKPT"].format(name=name), "w") as f:
        f.write(name)
sys.exit(code)
"""


def fake_stages(monkeypatch, tmp_path, teacher_tag):
    """run_all with FAKE_STAGE as every stage script and no launcher, and a teacher checkpoint of tag teacher_tag
    (only its existence counts); returns the run_all module."""
    import run_all as job
    script = tmp_path / "stage.py"
    script.write_text(FAKE_STAGE.format(root=ROOT))
    monkeypatch.setenv("CKPT", ckpt_path("{name}", "torch"))
    monkeypatch.setattr(job, "stage_script", lambda framework, stage: str(script))
    monkeypatch.setattr(job, "launcher_command", lambda framework, nproc: [sys.executable])
    teacher = ckpt_path(f"{teacher_tag}/teacher_s0", "torch")
    os.makedirs(os.path.dirname(teacher), exist_ok=True)
    open(teacher, "w").close()
    return job


@pytest.mark.parametrize("code, record, nproc, outcome", [
    (3, True, 1, "diverged"), (1, True, 2, "diverged"), (1, True, 1, "stage failed (exit 1)"),
    (3, False, 1, "does not say so"), (2, True, 1, "stage failed (exit 2)")])
def test_exit_codes_of_a_stage(monkeypatch, tmp_path, code, record, nproc, outcome):
    """Exit 3 with a record saying diverged is a result: the job goes on. Under a launcher (--nproc 2) so
    is exit 1 with such a record (torchrun reports any failed rank as 1); otherwise exit 1 or 2 stops the
    job, and so does exit 3 whose record does not say diverged. Fake stage scripts: run_all's part only."""
    tag = f"rx{code}{record}{nproc}"
    job = fake_stages(monkeypatch, tmp_path, f"{tag}_src")
    monkeypatch.setenv("FAKE_EXIT", str(code))
    monkeypatch.setenv("FAKE_RECORD", "1" if record else "")
    args = job.parse_args(["--tag", tag, "--teacher-from", f"{tag}_src", "--beta-sweep", "9", "0",
                           "--frameworks", "torch", "--nproc", str(nproc)])
    if outcome != "diverged":
        with pytest.raises(job.StageFailed, match=re.escape(outcome)):
            job.run_framework("torch", args, 0)
        return
    records = job.run_framework("torch", args, 0)
    assert records["dkd beta=9"] == {"diverged": 2, "wall": None}
    assert records["dkd beta=0"]["top1"] == 12.5 and records["dkd beta=0"]["seconds"]["train"] == 1.0


def test_dot_methods_add_a_dot_student_beside_the_plain_one(monkeypatch, tmp_path):
    """--dot-methods kd: a second KD student, student_kd_dot, trained with the own pair's --dot (mdistiller's with
    --dot-delta 0.075); the plain KD student is trained without it. Refused where DOT cannot run (several processes)
    or has no students."""
    job = fake_stages(monkeypatch, tmp_path, "rdot_src")
    commands, run = [], job.run
    monkeypatch.setattr(job, "run", lambda cmd, *a, **k: commands.append(cmd) or run(cmd, *a, **k))
    flags = ["--tag", "rdot", "--teacher-from", "rdot_src", "--methods", "kd", "--dot-methods", "kd",
             "--frameworks", "torch"]
    records = job.run_framework("torch", job.parse_args(flags), 0)
    assert list(records) == ["kd", "kd dot"] and records["kd dot"]["top1"] == 12.5
    trained = {c[c.index("--name") + 1]: c for c in commands if "--name" in c}
    assert sorted(trained) == ["rdot/student_kd_dot_s0", "rdot/student_kd_s0"]
    dot = trained["rdot/student_kd_dot_s0"]
    assert dot[dot.index("--method") + 1] == "kd" and dot[dot.index("--dot") + 1] == str(OWN_PAIR_DOT_DELTA)
    assert "--dot" not in trained["rdot/student_kd_s0"]
    assert job.parse_args(["--dot-methods", "kd", "--dot-delta", "0.075"]).dot_delta == MDISTILLER_DOT_DELTA
    # --resume keeps the finished DOT student of this delta, and refuses one trained with another
    assert job.run_framework("torch", job.parse_args([*flags, "--resume"]), 0)["kd dot"]["top1"] == 12.5
    with pytest.raises(job.StageFailed, match=re.escape(f"trained with --dot {OWN_PAIR_DOT_DELTA!r}, this job gives "
                                                        f"--dot 0.075: delete it")):
        job.run_framework("torch", job.parse_args([*flags, "--resume", "--dot-delta", "0.075"]), 0)
    for bad in (["--dot-methods", "kd", "--nproc", "2"], ["--dot-methods", "kd", "--preset", "vit-quick"],
                ["--dot-methods", "kd", "--beta-sweep", "1"], ["--dot-methods", "ce"]):
        with pytest.raises(SystemExit):
            job.parse_args(bad)


def test_resume_keeps_a_finished_run_only_when_every_given_flag_matches_its_record():
    """--resume skips a finished stage: every flag run_all gives it (and --student-args / --teacher-args) must hold
    the record's value, typed as the record holds it; paths and the device may differ; epochs may not."""
    import run_all as job
    config = {"seed": 0, "epochs": 40, "milestones": [15, 30], "dot": 0.05, "beta": 1.0, "preset": "full",
              "mdistiller_weights": False, "data_dir": "/a/data", "teacher": "/a/ckpt/t.ckpt", "device": "auto"}
    cmd = ["torchrun", "--nproc-per-node", "2", "/b/torch_/train_student.py", "--seed", "0", "--preset", "full",
           "--data-dir", "/b/data", "--teacher", "/b/ckpt/t.ckpt", "--dot", "0.05", "--milestones", "15", "30",
           "--beta", "1", "--device", "cpu", "--no-mdistiller-weights"]
    assert job.stage_flags(cmd)["milestones"] == ["15", "30"] and "nproc_per_node" not in job.stage_flags(cmd)
    assert job.stale_setting(job.stage_flags(cmd), config) is None
    assert job.stale_setting(job.stage_flags(cmd + ["--epochs=40", "--preset", "full"]), config) is None
    for extra, stale in [(["--epochs", "30"], ("--epochs 40", "--epochs 30")),
                         (["--milestones", "5", "7"], ("--milestones [15, 30]", "--milestones 5 7")),
                         (["--seed", "1"], ("--seed 0", "--seed 1")),
                         (["--seed=1"], ("--seed 0", "--seed 1")), (["--seed", "0.5"], ("--seed 0", "--seed 0.5")),
                         (["--preset", "quick"], ("--preset 'full'", "--preset quick")),
                         (["--mdistiller-weights"], ("--no-mdistiller-weights", "--mdistiller-weights")),
                         (["--dot", "0.075"], ("--dot 0.05", "--dot 0.075")),
                         (["--rdrop", "5"], ("a version before --rdrop existed", "--rdrop 5"))]:
        assert job.stale_setting(job.stage_flags(cmd + extra), config) == stale
