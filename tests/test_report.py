"""report.py on fake runs with known numbers: figures, tables, README markers, sweep mode, errors."""
import os
import re

import numpy as np
import pytest

from common.paths import LOG_DIR
from common.logs import EventWriter
from common.results import add_test, run_dir, training_result, write_result
import report

SEEDS = [0, 1]
EPOCHS = 3
# val top-1 per epoch; the best epoch is not always the last one
VAL_TOP1 = {("torch", 0): [50.0, 62.0, 60.0], ("torch", 1): [52.0, 61.0, 63.0],
            ("jittor", 0): [49.0, 63.0, 59.0], ("jittor", 1): [51.0, 60.0, 64.5]}
TEST_TOP1 = {("torch", 0): 58.0, ("torch", 1): 61.5, ("jittor", 0): 57.25, ("jittor", 1): 62.0}
STAGE_OFFSET = {"teacher": 10.0, "student_kd": 0.0}
SECONDS = {"torch": (1.0, 10.0, 2.0), "jittor": (1.5, 14.0, 2.5)}  # time/data, train, eval per epoch, seed 0
COMPILE = {"torch": 0.5, "jittor": 6.0}  # extra training seconds in the first epoch (Jittor compiles its kernels)


def epoch_metrics(fw, seed, epoch, offset):
    data, train, evaluate = SECONDS[fw]
    return {"train/loss": 2.0 / (epoch + 1), "train/top1": 30.0 + 15 * epoch, "train/top5": 90.0,
            "val/loss": 2.2 / (epoch + 1) + 0.1 * seed, "val/top1": VAL_TOP1[fw, seed][epoch] + offset,
            "val/top5": 95.0, "lr": 0.01, "time/data": data, "time/eval": evaluate,
            "time/train": train + seed + (COMPILE[fw] if epoch == 0 else 0.0)}


def write_run(name, fw, seed, offset=0.0, test_top1=None, finished=True, ran_on=()):
    """One fake run folder as a training script and test.py leave it: event files, and the result
    record (finished, then with test.py's metrics) through common.results. Returns the history."""
    writer = EventWriter(run_dir(name, fw))
    history = []
    for epoch in range(EPOCHS):
        history.append(epoch_metrics(fw, seed, epoch, offset))
        writer.scalars(history[-1], epoch + 1)
    writer.close()
    if finished:
        write_result(training_result({"name": name}, fw, "stage", history, max(h["val/top1"] for h in history),
                                     ran_on=ran_on))
    if test_top1 is not None:
        add_test(name, fw, fw, {"top1": test_top1, "top5": 99.0, "loss": 1.0, "per_class": [test_top1] * 10,
                                "images_per_s": 1000.0, "n": 10000})
    return history


def fmt(values, digits=2):
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def spread(values):
    """|difference of the means| / pooled seed std, as report.py's table rounds it."""
    pooled = np.sqrt((np.std(values["torch"], ddof=1) ** 2 + np.std(values["jittor"], ddof=1) ** 2) / 2)
    return f"{abs(np.mean(values['jittor']) - np.mean(values['torch'])) / pooled:.2f}"


def table_rows(block):
    """{first cell: [cells]} of the rows of the first markdown table in block."""
    return tables(block)[0]


def tables(block):
    """[{first cell: [cells]}] for each markdown table in block, in order (escaped \\| inside a cell kept)."""
    found, current = [], None
    for line in block.splitlines():
        if line.startswith("|---"):  # the header's separator
            continue
        if line.startswith("| "):
            cells = [c.strip() for c in line.replace("\\|", "¦").strip().strip("|").split("|")]
            if current is None:
                current = {}
                found.append(current)
            current[cells[0]] = cells
        else:
            current = None
    return found


def terminal_rows(out):
    """{first cell: [cells]} of the plain ("simple") table in report.py's terminal output; the cells
    are cut at the columns of the dashed line under the header, as they may hold single spaces."""
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    spans = [m.span() for m in re.finditer(r"-+", lines[rule])]
    rows = {}
    for line in [lines[rule - 1]] + lines[rule + 1:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in spans]
        rows[cells[0]] = cells
    return rows


def assert_narrow(out):
    """Everything report.py prints fits in 100 columns, and the wide tables stay in the report file."""
    assert max(map(len, out.splitlines())) <= 100, out
    assert "first epoch s" not in out and "best val top-1" not in out and "|" not in out, out


def assert_png(path):
    assert os.path.getsize(path) > 5000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


README = ("# Title\r\n\r\nText before, with ± and Δ.\n<!-- report:rep:start -->\nold table\n<!-- report:rep:end -->\n"
          "between\n<!-- report:rep-sweep:start -->\nold sweep\n<!-- report:rep-sweep:end -->\nafter\n")


@pytest.fixture(scope="module")
def stage_runs():
    """teacher: complete and tested, seed 1 torch resumed on another machine; student_kd: jittor untested, and
    seed 1 jittor unfinished (no record)."""
    cpu = {"device": "cpu", "threads": 1, "processes": 1}
    for seed in SEEDS:
        for fw in report.FRAMEWORKS:
            moved = [{"from_epoch": 1, **cpu}, {"from_epoch": 2, **cpu, "threads": 2}] if (fw, seed) == ("torch", 1) else ()
            write_run(f"rep/teacher_s{seed}", fw, seed, STAGE_OFFSET["teacher"], TEST_TOP1[fw, seed],
                      ran_on=moved or [{"from_epoch": 1, **cpu}])
            write_run(f"rep/student_kd_s{seed}", fw, seed, STAGE_OFFSET["student_kd"],
                      TEST_TOP1[fw, seed] if fw == "torch" else None, finished=(fw, seed) != ("jittor", 1))
    os.makedirs(os.path.join(LOG_DIR, "rep", "not_a_run"), exist_ok=True)  # ignored
    return "rep"


def test_stage_report(stage_runs, tmp_path, capsys):
    readme, img = tmp_path / "README.md", tmp_path / "img"
    readme.write_bytes(README.encode("utf-8"))
    argv = ["--tag", stage_runs, "--doc", str(readme), "--img-dir", str(img)]
    block = report.main(argv)
    out = capsys.readouterr().out
    assert_narrow(out)  # two seeds, an unfinished run, a missing test: still one narrow table
    assert terminal_rows(out)["teacher"] == ["teacher", "59.75 ± 2.47", "59.62 ± 3.36", "-0.12", "–"]
    report_md = os.path.join(LOG_DIR, "rep", "report.md")
    assert out.endswith(f"\nEvery table and figure: {report_md}\nThe tables also updated in {readme}\n")

    for stage in ("teacher", "student_kd"):
        assert_png(img / f"rep_{stage}.png")
        assert f"![{stage}](img/rep_{stage}.png)" in block
    assert not (img / "rep_student_ce.png").exists()

    rows, time_rows = tables(block)
    assert set(rows) == set(time_rows) == {"stage", "teacher", "student_kd"}
    for stage, offset in STAGE_OFFSET.items():
        # student_kd/s1/jittor is still training: left out of every number
        seeds = {fw: [0] if (stage, fw) == ("student_kd", "jittor") else SEEDS for fw in report.FRAMEWORKS}
        final = {fw: [VAL_TOP1[fw, s][-1] + offset for s in seeds[fw]] for fw in report.FRAMEWORKS}
        best = {fw: [max(VAL_TOP1[fw, s]) + offset for s in seeds[fw]] for fw in report.FRAMEWORKS}
        test = {fw: [TEST_TOP1[fw, s] for s in SEEDS] for fw in report.FRAMEWORKS}
        expected = [stage, fmt(final["torch"]), fmt(final["jittor"]), fmt(best["torch"]), fmt(best["jittor"]),
                    fmt(test["torch"])]
        if stage == "teacher":
            expected += [fmt(test["jittor"]), f"{np.mean(test['jittor']) - np.mean(test['torch']):+.2f}",
                         spread(test)]
        else:  # jittor untested: the difference falls back to final val top-1, marked
            expected += ["–", f"{np.mean(final['jittor']) - np.mean(final['torch']):+.2f} (val)",
                         "–"]  # one finished jittor seed: no spread to compare with
        assert rows[stage] == expected
    assert rows["teacher"][1] == "71.50 ± 2.12"  # one by hand: 70 and 73
    assert rows["teacher"][7] == "-0.12"  # 59.625 - 59.75
    # 0.125 / sqrt((2.475^2 + 3.359^2) / 2) = 0.125 / 2.950
    assert rows["teacher"][8] == "0.04"
    assert rows["student_kd"][2] == "59.00" and rows["student_kd"][7] == "-2.50 (val)"  # 59 - (60 + 63) / 2

    # time table: the first epoch (with the compilation), the later epochs' seconds per epoch, the whole
    # stage; per framework, with the jittor/torch ratio of the means
    expected = ["teacher"]
    steady = {fw: [sum(SECONDS[fw]) + seed for seed in SEEDS] for fw in report.FRAMEWORKS}  # one later epoch
    for seconds in ({fw: [t + COMPILE[fw] for t in steady[fw]] for fw in report.FRAMEWORKS}, steady,
                    {fw: [EPOCHS * t + COMPILE[fw] for t in steady[fw]] for fw in report.FRAMEWORKS}):
        expected += [fmt(seconds["torch"], 1), fmt(seconds["jittor"], 1),
                     f"{np.mean(seconds['jittor']) / np.mean(seconds['torch']):.2f}"]
    assert time_rows["teacher"] == expected
    # by hand: first epochs 13.5, 14.5 vs 24, 25; later 13, 14 vs 18, 19; totals 39.5, 42.5 vs 60, 63
    assert time_rows["teacher"][1:] == ["14.0 ± 0.7", "24.5 ± 0.7", "1.75", "13.5 ± 0.7", "18.5 ± 0.7", "1.37",
                                        "41.0 ± 2.1", "61.5 ± 2.1", "1.50"]
    assert time_rows["student_kd"][1:4] == ["14.0 ± 0.7", "24.0", "1.71"]  # jittor: seed 0 only
    assert "gain" not in block  # no CE student here, so no gain table
    assert "2 seeds (0, 1)" in block and "generated by `python report.py --tag rep`" in block.lower()
    assert "Still training or stopped, so left out" in block and "student_kd/s1/jittor (epoch 3)" in block
    moved = [line for line in block.splitlines() if line.startswith("Resumed on another machine")]
    assert len(moved) == 1 and moved[0].endswith(": teacher/s1/torch (from epoch 2: cpu, 2 thread(s) x 1 process(es)).")

    text = readme.read_bytes().decode("utf-8")
    start, end = "<!-- report:rep:start -->", "<!-- report:rep:end -->"
    assert text.startswith(README[:README.index(start) + len(start)])  # CRLF and non-ASCII kept
    assert text.endswith(README[README.index(end):])  # the sweep block is untouched
    assert "old table" not in text and block in text
    with open(os.path.join(LOG_DIR, "rep", "report.md"), encoding="utf-8") as f:
        saved = f.read()
    assert table_rows(saved) == rows and "![teacher](" in saved

    report.main(argv)  # running again changes nothing
    assert readme.read_bytes().decode("utf-8") == text
    assert "updated" in capsys.readouterr().out
    assert "first epoch s jittor" in saved  # the wide tables are in the report file


def test_a_doc_without_markers_is_an_error_and_left_alone(stage_runs, tmp_path, capsys):
    """--doc names a page without the tag's markers: one error line before anything is written."""
    readme = tmp_path / "README.md"
    readme.write_text("# No markers here\n")
    with pytest.raises(SystemExit) as exit_:
        report.main(["--tag", stage_runs, "--doc", str(readme), "--img-dir", str(tmp_path / "img")])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and readme.read_text() == "# No markers here\n"
    assert "markers missing" in captured.err and "no file was changed" in captured.err
    assert not (tmp_path / "img").exists() and captured.out == ""


def test_a_tag_without_markers_says_nothing_about_them(stage_runs, tmp_path, capsys):
    """The quick preset's case: no page holds the markers, which is normal, so nothing is said."""
    assert report.marked_doc(stage_runs) is None
    report.main(["--tag", stage_runs, "--img-dir", str(tmp_path / "img")])
    out = capsys.readouterr().out
    assert "marker" not in out and "updated" not in out and "teacher" in out
    assert out.rstrip().splitlines()[-1] == f"Every table and figure: {os.path.join(LOG_DIR, 'rep', 'report.md')}"


def test_missing_or_empty_tag_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no runs for tag 'nope'.*does not exist"):
        report.main(["--tag", "nope", "--img-dir", str(tmp_path)])
    os.makedirs(os.path.join(LOG_DIR, "empty", "junk"), exist_ok=True)
    with pytest.raises(SystemExit, match="holds no runs"):
        report.main(["--tag", "empty", "--img-dir", str(tmp_path)])


BETAS = ["0", "0.5", "1", "2"]


def sweep_top1(fw, seed, beta):
    return 60.0 + 2 * float(beta) + seed + (0.5 if fw == "jittor" else 0.0)


def test_sweep_report(tmp_path, capsys):
    """beta 2 in Jittor was not tested: its cell is final val top-1, marked (val)."""
    for beta in BETAS:
        for seed in SEEDS:
            for fw in report.FRAMEWORKS:
                has_test = (fw, beta) != ("jittor", "2")
                write_run(f"sweep/student_dkd_beta{beta}_s{seed}", fw, seed,
                          test_top1=sweep_top1(fw, seed, beta) if has_test else None)
    write_run("sweep/student_dkd_s0", "torch", 0)  # not a sweep run: ignored
    readme, img = tmp_path / "README.md", tmp_path / "img"
    readme.write_bytes(README.replace("report:rep-sweep", "report:sweep-sweep").encode("utf-8"))
    block = report.main(["--tag", "sweep", "--sweep", "--doc", str(readme), "--img-dir", str(img)])

    assert_png(img / "sweep_beta_sweep.png")
    assert "![beta sweep](img/sweep_beta_sweep.png)" in block
    rows = table_rows(block)
    assert list(rows) == ["beta"] + BETAS  # sorted numerically, written with %g
    for beta in BETAS:
        torch_top1 = [sweep_top1("torch", s, beta) for s in SEEDS]
        jittor_top1 = ([VAL_TOP1["jittor", s][-1] for s in SEEDS] if beta == "2"
                       else [sweep_top1("jittor", s, beta) for s in SEEDS])
        expected_jittor = fmt(jittor_top1) + (" (val)" if beta == "2" else "")
        diff = f"{np.mean(jittor_top1) - np.mean(torch_top1):+.2f}"
        assert rows[beta] == [beta, fmt(torch_top1), expected_jittor, diff]
    assert rows["0.5"] == ["0.5", "61.50 ± 0.71", "62.00 ± 0.71", "+0.50"]

    text = readme.read_bytes().decode("utf-8")
    start, end = "<!-- report:sweep-sweep:start -->", "<!-- report:sweep-sweep:end -->"
    expected_text = README.replace("report:rep-sweep", "report:sweep-sweep")
    assert text.startswith(expected_text[:expected_text.index(start) + len(start)])
    assert text.endswith(expected_text[expected_text.index(end):])
    assert "old sweep" not in text and "old table" in text and block in text
    assert os.path.isfile(os.path.join(LOG_DIR, "sweep", "report_sweep.md"))
    out = capsys.readouterr().out
    assert_narrow(out)
    assert terminal_rows(out)["0.5"] == ["0.5", "61.50 ± 0.71", "62.00 ± 0.71", "+0.50"]
    assert terminal_rows(out)["2"][2] == "61.75 ± 3.89 (val)"  # final val 59 and 64.5, by hand


def test_gain_over_the_ce_student_is_paired_by_seed(tmp_path):
    """KD/DKD minus CE per framework, seed by seed; a seed without a tested CE student is left out."""
    test = {("student_ce", 0): 50.0, ("student_ce", 1): 54.0, ("student_kd", 0): 53.0, ("student_kd", 1): 56.0,
            ("student_dkd", 0): 55.5}
    for (stage, seed), top1 in test.items():
        for fw in report.FRAMEWORKS:
            write_run(f"gain/{stage}_s{seed}", fw, seed, test_top1=top1 + (1.0 if fw == "jittor" else 0.0))
    write_run("gain/student_dkd_s1", "torch", 1, test_top1=60.0)  # torch only
    block = report.main(["--tag", "gain", "--img-dir", str(tmp_path)])
    rows, gains = tables(block)[:2]
    assert gains["student_kd − student_ce"][1:] == ["+2.50 ± 0.71", "+2.50 ± 0.71"]  # gains 3 and 2
    assert gains["student_dkd − student_ce"][1:] == ["+5.75 ± 0.35", "+5.50"]  # torch 5.5, 6; jittor seed 0 only
    assert rows["student_ce"][8] == "0.35"  # |Δ| 1 over the seed std 2.83 of both frameworks


def write_stages(tag, top1s):
    """Seeds 0 and 1 of each stage, the same test top-1 in both frameworks: top1s[stage] + seed."""
    for seed in (0, 1):
        for fw in report.FRAMEWORKS:
            for stage, top1 in top1s.items():
                write_run(f"{tag}/{stage}_s{seed}", fw, seed, test_top1=top1 + seed)


def test_fitnet_and_at_rows_and_their_gains(tmp_path):
    """The feature distillers are stages of the same tables, with their paired gain over CE."""
    write_stages("feat", {"student_ce": 50.0, "student_fitnet": 48.0, "student_at": 51.5})
    block = report.main(["--tag", "feat", "--img-dir", str(tmp_path)])
    rows, gains = tables(block)[:2]
    assert list(rows)[1:] == ["student_ce", "student_fitnet", "student_at"]  # STAGES' order, after the header
    assert gains["student_fitnet − student_ce"][1:] == ["-2.00 ± 0.00", "-2.00 ± 0.00"]
    assert gains["student_at − student_ce"][1:] == ["+1.50 ± 0.00", "+1.50 ± 0.00"]


def test_against_compares_each_stage_with_the_same_seed_of_another_tag(tmp_path):
    """report.py --tag rdrop --against full: an R-Drop teacher and its students against the plain ones."""
    for fw in report.FRAMEWORKS:
        for stage, plain, rdrop in (("teacher", 78.0, 79.5), ("student_kd", 64.0, 63.25)):
            write_run(f"plain/{stage}_s0", fw, 0, test_top1=plain)
            write_run(f"plain/{stage}_s1", fw, 1, test_top1=plain + 1)  # a seed the other tag lacks: left out
            write_run(f"rd/{stage}_s0", fw, 0, test_top1=rdrop)
        write_run("plain/student_dkd_s0", fw, 0, test_top1=66.0)  # a stage the other tag lacks: no row
    block = report.main(["--tag", "rd", "--against", "plain", "--img-dir", str(tmp_path)])
    assert "Test top-1 of rd against plain" in block
    against, = [t for t in tables(block) if "rd torch" in t.get("stage", [])]
    assert against["teacher"][1:4] == ["79.50", "78.00", "+1.50"]
    assert against["student_kd"][1:4] == ["63.25", "64.00", "-0.75"]
    assert "student_dkd" not in against


def write_diverged(name, fw, seed, epoch):
    """A run whose loss became NaN at epoch: events, and a record saying diverged (not finished, not tested)."""
    history = write_run(name, fw, seed, finished=False)[:epoch - 1]
    write_result(training_result({"name": name}, fw, "stage", history, None, diverged={"epoch": epoch, "error": "nan"}))


def test_diverged_runs_are_marked_and_left_out(tmp_path, capsys):
    """A diverged run is a result: named with its epoch, never averaged in, never called unfinished."""
    for seed in SEEDS:
        for fw in report.FRAMEWORKS:
            write_run(f"div/student_dkd_beta1_s{seed}", fw, seed, test_top1=65.0 + seed)
            if fw == "torch" or seed == 1:
                write_diverged(f"div/student_dkd_beta3_s{seed}", fw, seed, epoch=12 + seed)
            else:
                write_run(f"div/student_dkd_beta3_s{seed}", fw, seed, test_top1=70.0)
    block = report.main(["--tag", "div", "--sweep", "--img-dir", str(tmp_path)])
    rows = table_rows(block)
    assert rows["3"] == ["3", "diverged in 2 of 2 seeds (epoch 12, 13)", "70.00 (1 of 2 seeds diverged: epoch 13)", "–"]
    assert rows["1"] == ["1", "65.50 ± 0.71", "65.50 ± 0.71", "+0.00"]
    assert "Still training" not in block and "Resumed on another machine" not in block
    assert_png(tmp_path / "div_beta_sweep.png")

    # the stage table: jittor seed 1's teacher diverged; its val numbers are left out too
    for seed in SEEDS:
        for fw in report.FRAMEWORKS:
            if (fw, seed) == ("jittor", 1):
                write_diverged(f"div2/teacher_s{seed}", fw, seed, epoch=5)
            else:
                write_run(f"div2/teacher_s{seed}", fw, seed, test_top1=TEST_TOP1[fw, seed])
            write_diverged(f"div2/student_at_s{seed}", fw, seed, epoch=1)  # every run diverged: a row, no figure
    block = report.main(["--tag", "div2", "--img-dir", str(tmp_path)])
    top1, _ = tables(block)
    assert top1["student_at"][5:7] == ["diverged in 2 of 2 seeds (epoch 1, 1)"] * 2
    assert_png(tmp_path / "div2_teacher.png")
    assert not (tmp_path / "div2_student_at.png").exists() and "div2_student_at.png" not in block
    assert top1["teacher"][2] == f"{VAL_TOP1['jittor', 0][-1]:.2f}"  # final val: seed 0 only
    assert top1["teacher"][6] == f"{TEST_TOP1['jittor', 0]:.2f} (1 of 2 seeds diverged: epoch 5)"
    assert top1["teacher"][7] == f"{TEST_TOP1['jittor', 0] - np.mean([58.0, 61.5]):+.2f}"
    out = capsys.readouterr().out.split("Every table")[-2]  # the stage table's run, after the sweep's
    assert_narrow(out)
    narrow = terminal_rows(out)
    assert narrow["teacher"][2] == "57.25; diverged (epoch 5)" and narrow["teacher"][3] == "-2.50"
    assert narrow["student_at"][1:3] == ["diverged (epoch 1, 1)"] * 2


def test_the_terminal_gets_one_narrow_table(tmp_path, capsys):
    """stage, torch, Jittor, Δ, gain over CE: test top-1, "diverged" with its epoch; the numbers by hand."""
    for stage, torch_top1, jittor_top1 in (("teacher", 75.0, 75.5), ("student_ce", 60.0, 61.0),
                                           ("student_kd", 65.0, 64.0), ("student_dkd", None, 66.5)):
        for fw, top1 in (("torch", torch_top1), ("jittor", jittor_top1)):
            if top1 is None:
                write_diverged(f"narrow/{stage}_s0", fw, 0, epoch=2)
            else:
                write_run(f"narrow/{stage}_s0", fw, 0, test_top1=top1)
    report.main(["--tag", "narrow", "--img-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert_narrow(out)
    assert terminal_rows(out) == {
        "stage": ["stage", "torch", "Jittor", "Δ", "gain over CE (torch / Jittor)"],
        "teacher": ["teacher", "75.00", "75.50", "+0.50", "–"],
        "student_ce": ["student_ce", "60.00", "61.00", "+1.00", "–"],
        "student_kd": ["student_kd", "65.00", "64.00", "-1.00", "+5.00 / +3.00"],  # 65 - 60, 64 - 61
        "student_dkd": ["student_dkd", "diverged (epoch 2)", "66.50", "–", "– / +5.50"]}
    assert "Test top-1 (%), 1 seed (0):" in out
    with open(os.path.join(LOG_DIR, "narrow", "report.md"), encoding="utf-8") as f:
        assert "first epoch s jittor" in f.read()


def test_the_generated_blocks_are_found_in_their_docs_pages():
    """Without --doc, report.py finds the page holding a tag's markers (the README keeps none)."""
    from common.paths import ROOT
    for key, page in {"full": "results.md", "long": "results.md", "beta-sweep": "beta_sweep.md",
                      "rdrop": "distillers.md"}.items():
        assert report.marked_doc(key) == os.path.join(ROOT, "docs", page), key
    assert report.marked_doc("no-such-tag") is None


def test_a_dot_student_is_a_stage_of_its_own_with_its_gain(tmp_path):
    """run_all.py --dot-methods kd names the DOT student student_kd_dot: its own row after the methods' rows, and its
    gain over the same seed's CE student."""
    write_stages("dotr", {"student_ce": 50.0, "student_kd": 52.0, "student_kd_dot": 53.5})
    block = report.main(["--tag", "dotr", "--img-dir", str(tmp_path)])
    rows, gains = tables(block)[:2]
    assert list(rows)[1:] == ["student_ce", "student_kd", "student_kd_dot"]
    assert gains["student_kd_dot − student_ce"][1:] == ["+3.50 ± 0.00", "+3.50 ± 0.00"]


def test_seeds_keeps_the_same_seeds_in_both_frameworks(tmp_path):
    """--seeds 0 1 while seed 2 trains: seed 2 finished in torch only, so without the flag the torch mean is over
    3 seeds and the Jittor one over 2; with it both are over seeds 0 and 1, and the command says so."""
    top1 = {0: 60.0, 1: 62.0, 2: 70.0}
    for seed, value in top1.items():
        for fw in report.FRAMEWORKS:
            if (fw, seed) == ("jittor", 2):
                write_run(f"sel/teacher_s{seed}", fw, seed % 2, finished=False)  # still training (curves of seed 0)
            else:
                write_run(f"sel/teacher_s{seed}", fw, seed % 2, test_top1=value)
    rows = table_rows(report.main(["--tag", "sel", "--img-dir", str(tmp_path)]))
    assert rows["teacher"][5:8] == ["64.00 ± 5.29", "61.00 ± 1.41", "-3.00"]
    block = report.main(["--tag", "sel", "--seeds", "0", "1", "--img-dir", str(tmp_path)])
    assert table_rows(block)["teacher"][5:8] == ["61.00 ± 1.41", "61.00 ± 1.41", "+0.00"]
    assert "over 2 seeds (0, 1)" in block and "`python report.py --tag sel --seeds 0 1`" in block
    assert "Still training" not in block  # seed 2 is left out, not unfinished
    with pytest.raises(SystemExit, match=r"holds no run of seed 5 \(--seeds\)"):
        report.main(["--tag", "sel", "--seeds", "0", "5", "--img-dir", str(tmp_path)])
