"""The main job (run_all.py): both frameworks, table, --parallel, --resume and --teacher-from."""
import json
import os
import subprocess
import sys

import pytest

from common.checkpoint import ckpt_path, save_checkpoint
from common.paths import IMG_DIR, LOG_DIR
from common.logs import run_dir
from conftest import ROOT

TINY = "--epochs 1 --train-size 200 --val-size 50 --batch-size 50"


def run_all(tiny_data, *args, check=True):
    cmd = [sys.executable, os.path.join(ROOT, "run_all.py"), "--data-dir", tiny_data,
           "--teacher-args", TINY, "--student-args", TINY, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"run_all failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def summary(tag):
    with open(os.path.join(LOG_DIR, tag, "summary.json")) as f:
        return json.load(f)


def read_test_json(name, fw):
    with open(os.path.join(run_dir(name, fw), "test.json")) as f:
        return json.load(f)


def test_parallel_run_then_resume_then_teacher_from(tiny_data):
    proc = run_all(tiny_data, "--tag", "ra", "--methods", "kd", "--parallel")
    results = summary("ra")["results"]
    assert set(results) == {"torch", "jittor"}
    for fw in ("torch", "jittor"):
        assert sorted(results[fw][0]) == ["kd", "teacher"]  # one seed: the teacher, then the student
        for stage, name in (("teacher", "ra/teacher_s0"), ("kd", "ra/student_kd_s0")):  # test.py's numbers
            assert results[fw][0][stage]["top1"] == read_test_json(name, fw)["top1"] and results[fw][0][stage]["wall"] > 0
    assert "in parallel with 1 CPU thread(s) each" in proc.stdout  # the 2 threads are split
    # then the report: overlaid figures per stage, and the table (no page has "ra" markers: none changed)
    for stage in ("teacher", "student_kd"):
        assert os.path.getsize(os.path.join(IMG_DIR, f"ra_{stage}.png")) > 5000
    assert "| student_kd " in proc.stdout and "no README.md or docs/*.md holds its markers" in proc.stdout
    assert "first epoch s jittor" in proc.stdout  # the time table keeps Jittor's compilation apart

    # --resume: everything finished, so nothing is trained again and the table is the same
    again = run_all(tiny_data, "--tag", "ra", "--methods", "kd", "--resume")
    assert again.stdout.count("not run again") == 4
    assert "$ " not in again.stdout  # no stage command was started
    top1 = lambda res: {fw: {stage: r["top1"] for stage, r in res[fw][0].items()} for fw in res}
    assert top1(summary("ra")["results"]) == top1(results)

    # --resume with a stage's test.json gone: that stage is run again, continuing its checkpoint
    os.remove(os.path.join(run_dir("ra/student_kd_s0", "torch"), "test.json"))
    partial = run_all(tiny_data, "--tag", "ra", "--methods", "kd", "--frameworks", "torch", "--resume")
    assert partial.stdout.count("not run again") == 1
    assert "train_student.py --method kd" in partial.stdout and "--resume" in partial.stdout

    # --teacher-from: the beta sweep reuses this run's teachers instead of training its own
    sweep = run_all(tiny_data, "--tag", "rb", "--teacher-from", "ra", "--beta-sweep", "0", "1", "--frameworks", "torch")
    assert "train_teacher.py" not in sweep.stdout
    assert ckpt_path("ra/teacher_s0", "torch") in sweep.stdout
    assert sorted(summary("rb")["results"]["torch"][0]) == ["dkd beta=0", "dkd beta=1"]
    assert os.path.isfile(os.path.join(IMG_DIR, "rb_beta_sweep.png"))  # the sweep's report

    # a student that diverges is a result of the sweep, not the end of it: recorded, reported, not re-run
    diverging = run_all(tiny_data, "--tag", "rd", "--teacher-from", "ra", "--beta-sweep", "999999", "0",
                        "--frameworks", "torch")
    assert "the training loss became nan" in diverging.stderr
    records = summary("rd")["results"]["torch"][0]
    assert records["dkd beta=999999"]["diverged"] >= 1
    assert records["dkd beta=0"]["top1"] == read_test_json("rd/student_dkd_beta0_s0", "torch")["top1"]
    assert "| 999999 | diverged (epoch" in diverging.stdout  # report.py's sweep table
    again = run_all(tiny_data, "--tag", "rd", "--teacher-from", "ra", "--beta-sweep", "999999", "0",
                    "--frameworks", "torch", "--resume")
    assert "diverged earlier" in again.stdout and "$ " not in again.stdout


def test_teacher_from_a_missing_run_is_a_clear_error(tiny_data):
    proc = run_all(tiny_data, "--tag", "rc", "--teacher-from", "nosuchtag", check=False)
    assert proc.returncode != 0
    assert "--teacher-from nosuchtag: no teacher checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


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
                           {"model": tm.get_state(tm.build_model("cifar10quick", 0)), "optimizer": {}, "epoch": 0,
                            "best_top1": 0.0, "config": {"name": "rp_src/teacher_s0"}, "framework": "torch",
                            "arch": "cifar10quick"})
    proc = run_all(tiny_data, "--tag", "rp", "--teacher-from", "rp_src", "--parallel", "--seeds", "2",
                   "--methods", "kd", "dkd", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "jittor: --teacher-from rp_src: no teacher checkpoint" in proc.stderr  # both are reported
    assert "torch: " in proc.stderr and "because the other framework failed" in proc.stderr
    assert not os.path.exists(os.path.join(run_dir("rp/student_dkd_s1", "torch"), "test.json"))


def test_nproc_runs_every_stage_on_the_launchers_with_the_one_process_results(tiny_data):
    """--nproc 2: teacher, student and test.py of each framework under torchrun / mpirun; the BN-free CE
    student tests exactly as on one process, the BN teacher (4 steps, --sync-bn) within one image of 70."""
    one = run_all(tiny_data, "--tag", "rn1", "--methods", "ce", "--no-report")
    two = run_all(tiny_data, "--tag", "rn2", "--methods", "ce", "--nproc", "2", "--no-report")
    assert "2 processes per stage" in two.stdout and "processes per stage" not in one.stdout
    commands = [line for line in two.stdout.splitlines() if line.startswith("$ ")]
    assert len(commands) == 8  # per framework: teacher, its test, student, its test
    for line in commands:
        assert ("torch.distributed.run --standalone --nproc_per_node=2" in line) == ("/torch_/" in line)
        assert line.startswith("$ mpirun -np 2") == ("/jittor_/" in line)
    for fw in ("torch", "jittor"):
        student = [read_test_json(f"{tag}/student_ce_s0", fw) for tag in ("rn1", "rn2")]
        assert student[0]["top1"] == student[1]["top1"] and student[0]["per_class"] == student[1]["per_class"]
        teacher = [read_test_json(f"{tag}/teacher_s0", fw) for tag in ("rn1", "rn2")]
        assert teacher[0]["n"] == teacher[1]["n"] == 70 and abs(teacher[0]["top1"] - teacher[1]["top1"]) <= 100 / 70 + 1e-9
