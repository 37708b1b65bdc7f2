"""Figures and results tables, read back from run_all.py's runs: their TensorBoard event files (the
curves) and result records (log/<run>/<framework>/result.json, common/results.py: finished or
diverged, and test.py's metrics).

    python report.py                      # tag quick: the runs log/quick/<stage>_s<seed>/<framework>/
    python report.py --tag long           # another tag
    python report.py --tag beta --sweep   # DKD beta sweep: runs log/beta/student_dkd_beta<beta>_s<seed>/
    python report.py --tag rdrop --against full   # and each stage's test top-1 against the same seed's in tag full
    python report.py --tag full --seeds 0 1       # only seeds 0 and 1, while seed 2 still trains

Per stage (teacher, student_ce, _kd, _dkd, _fitnet, _at) with a finished run it draws
img/<tag>_<stage>.png: loss and top-1 per epoch, train solid and val dashed, torch and Jittor
overlaid; over several seeds the mean line with a min-max band. The tables give final and best val
top-1, test top-1, the difference jittor - torch against the seed spread, the gain over the CE
student, and the time per stage: the first epoch (which holds Jittor's kernel compilation) apart
from the later epochs' steady seconds per epoch, with the jittor/torch ratio; mean +- std (ddof=1)
over seeds.

Every table goes to log/<tag>/report.md (report_sweep.md with --sweep); the terminal gets one narrow
table (test top-1 per framework, their difference, the gain over CE) and the report file's name.
The tables and image links also replace whatever lies between two markers,
    <!-- report:<tag>:start -->   and   <!-- report:<tag>:end -->
(<tag>-sweep with --sweep), in the first of README.md and docs/*.md that holds them (the full run's
are in docs/results.md, the sweep's in docs/beta_sweep.md; --doc FILE names one, which must hold
them). Most tags (quick, say) have no markers anywhere: then no page is changed.
"""
import argparse
import functools
import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from common.checkpoint import describe_machine  # noqa: E402
from common.config import DOT_METHODS, FRAMEWORKS, METHOD_NAMES, VIT_STUDENTS  # noqa: E402
from common.errors import die, UserError  # noqa: E402
from common.files import atomic_write  # noqa: E402
from common.logs import read_scalars  # noqa: E402
from common.paths import IMG_DIR, LOG_DIR, ROOT  # noqa: E402
from common.results import RESULT_FILE  # noqa: E402
from common.tables import table  # noqa: E402

COLORS = {"torch": "#ee4c2c", "jittor": "#1f77b4"}  # one colour per framework in every figure
LABELS = {"torch": "torch", "jittor": "Jittor"}  # the frameworks in the terminal table, as README.md names them
STAGES = ["teacher", *(f"student_{method}" for method in METHOD_NAMES),
          *(f"student_{method}_dot" for method in DOT_METHODS),  # run_all.py --dot-methods
          *(name for name in VIT_STUDENTS if name[len("student_"):] not in METHOD_NAMES)]  # the ViT track's too
STAGE_RUN = re.compile(rf"^({'|'.join(STAGES)})_s(\d+)$")
SWEEP_RUN = re.compile(r"^student_dkd_beta(\d+(?:\.\d+)?)_s(\d+)$")
TIME_TAGS = ("time/data", "time/train", "time/eval")
DASH = "–"  # an empty table cell


# ----------------------------------------------------------------------------
# Reading runs
# ----------------------------------------------------------------------------
def read_json(path):
    """A JSON file, or None when it is missing or unreadable (with a warning)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"warning: ignoring {path} ({e})", file=sys.stderr)
        return None


def read_framework(folder):
    """One framework's run folder -> {"scalars": {tag: {step: value}}, "test": test.py's metrics or None,
    "finished": bool, "diverged": {"epoch", "error"} or None, "ran_on": where its epochs ran}, from its event files
    and its result record;
    None when it holds neither events nor a diverged record (a run can diverge in its first epoch,
    before it logs anything)."""
    if not os.path.isdir(folder):
        return None
    scalars = {}
    if any(f.startswith("events.out.tfevents") for f in os.listdir(folder)):
        scalars = {tag: dict(points) for tag, points in read_scalars(folder).items()}  # step -> value
    record = read_json(os.path.join(folder, RESULT_FILE)) or {}  # none while a run trains
    if not scalars and not record.get("diverged"):
        return None
    return {"scalars": scalars, "test": record.get("test"), "finished": bool(record.get("finished")),
            "diverged": record.get("diverged"), "ran_on": record.get("ran_on") or []}


def find_runs(tag, pattern, key=str, seeds=None):
    """{key: {seed: {framework: run}}} for the run folders under log/<tag>/ whose names match pattern.

    pattern's first group is the key (the stage, or the beta of a sweep), its second the seed; seeds, when
    given, keeps only those (each must have a run).
    """
    root = os.path.join(LOG_DIR, tag)
    if not os.path.isdir(root):
        raise SystemExit(f"error: no runs for tag {tag!r}: {root} does not exist "
                         f"(train first, e.g. `python run_all.py --tag {tag}`)")
    runs = {}
    for name in sorted(os.listdir(root)):
        match = pattern.match(name)
        if not match:
            continue
        seed = int(match.group(2))
        if seeds is not None and seed not in seeds:
            continue
        found = {fw: read_framework(os.path.join(root, name, fw)) for fw in FRAMEWORKS}
        found = {fw: run for fw, run in found.items() if run}
        if found:
            runs.setdefault(key(match.group(1)), {})[seed] = found
    if not runs:
        raise SystemExit(f"error: {root} holds no runs with event files named like {pattern.pattern} "
                         f"(is this a beta sweep? then add --sweep)")
    missing = sorted(set(seeds or ()) - {seed for by_seed in runs.values() for seed in by_seed})
    if missing:
        raise SystemExit(f"error: {root} holds no run of seed {', '.join(map(str, missing))} (--seeds)")
    return runs


# ----------------------------------------------------------------------------
# Numbers from one run, and over seeds
# ----------------------------------------------------------------------------
def final_value(run, tag):
    points = run["scalars"].get(tag)
    return points[max(points)] if points else None


def best_value(run, tag):
    points = run["scalars"].get(tag)
    return max(points.values()) if points else None


def test_top1(run):
    return run["test"]["top1"] if run["test"] else None


def epoch_seconds(run):
    """{epoch: seconds of data loading + training + evaluation} of one run."""
    epochs = set().union(*(run["scalars"].get(tag, {}) for tag in TIME_TAGS))
    return {e: sum(run["scalars"].get(tag, {}).get(e, 0.0) for tag in TIME_TAGS) for e in sorted(epochs)}


def stage_seconds(run):
    """Seconds of one stage: data loading + training + evaluation, summed over epochs."""
    return sum(epoch_seconds(run).values())


def first_epoch_seconds(run):
    """The first epoch's seconds: Jittor compiles its kernels there (cached for later runs)."""
    seconds = epoch_seconds(run)
    return seconds[min(seconds)] if seconds else None


def steady_epoch_seconds(run):
    """Mean seconds per epoch after the first (the steady speed); None for a one-epoch run."""
    later = list(epoch_seconds(run).values())[1:]
    return sum(later) / len(later) if later else None


def has_result(run):
    """Finished or diverged: a result either way, unlike a run still training (or stopped)."""
    return bool(run["finished"] or run["diverged"])


def trained_runs(seeds, framework):
    """The finished runs of one framework over seeds: a run still training (no finished record) would
    mix its early epochs into the means, and a diverged run's numbers mean nothing."""
    return [runs[framework] for _, runs in sorted(seeds.items())
            if framework in runs and runs[framework]["finished"] and not runs[framework]["diverged"]]


def over_seeds(seeds, framework, get):
    """[get(run)] for the finished, not diverged runs of this framework, leaving out missing numbers."""
    values = [get(run) for run in trained_runs(seeds, framework)]
    return [v for v in values if v is not None]


def diverged_epochs(seeds, framework):
    """The epochs at which this framework's runs diverged, over seeds."""
    return [runs[framework]["diverged"]["epoch"] for _, runs in sorted(seeds.items())
            if framework in runs and runs[framework]["diverged"]]


def with_diverged(cell, seeds, framework):
    """A top-1 cell, saying in how many of the seeds that ran it diverged, and at which epochs (those
    seeds are left out of the numbers)."""
    epochs = diverged_epochs(seeds, framework)
    if not epochs:
        return cell
    ran = sum(1 for runs in seeds.values() if framework in runs and has_result(runs[framework]))
    where = f"epoch {', '.join(map(str, epochs))}"
    if cell != DASH:
        return f"{cell} ({len(epochs)} of {ran} seeds diverged: {where})"
    return f"diverged ({where})" if ran == 1 else f"diverged in {len(epochs)} of {ran} seeds ({where})"


def short_diverged(cell, seeds, framework):
    """with_diverged for the narrow terminal table: "diverged (epoch 12)", after the other seeds' value
    where only some diverged."""
    epochs = diverged_epochs(seeds, framework)
    if not epochs:
        return cell
    where = f"diverged (epoch {', '.join(map(str, epochs))})"
    return where if cell == DASH else f"{cell}; {where}"


def mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def fmt(values, digits=2, sign=False):
    """'mean ± std' over seeds, just the value for one seed, a dash for none; sign: '+' on gains."""
    if not values:
        return DASH
    m, s = mean_std(values)
    mean = f"{m:+.{digits}f}" if sign else f"{m:.{digits}f}"
    return f"{mean} ± {s:.{digits}f}" if len(values) > 1 else mean


def diff_cell(values):
    """jittor - torch of the means, signed; a dash if a framework has no value."""
    if not values["torch"] or not values["jittor"]:
        return DASH
    return f"{mean_std(values['jittor'])[0] - mean_std(values['torch'])[0]:+.2f}"


def spread_cell(values):
    """|jittor - torch| over the pooled seed-to-seed std, sqrt((s_torch^2 + s_jittor^2) / 2);
    a dash unless both frameworks have at least two seeds (a spread to compare with)."""
    if len(values["torch"]) < 2 or len(values["jittor"]) < 2:
        return DASH
    (m_torch, s_torch), (m_jittor, s_jittor) = mean_std(values["torch"]), mean_std(values["jittor"])
    pooled = np.sqrt((s_torch ** 2 + s_jittor ** 2) / 2)
    return f"{abs(m_jittor - m_torch) / pooled:.2f}" if pooled > 0 else DASH


def ratio_cell(values):
    """jittor / torch of the means."""
    if not values["torch"] or not values["jittor"] or mean_std(values["torch"])[0] <= 0:
        return DASH
    return f"{mean_std(values['jittor'])[0] / mean_std(values['torch'])[0]:.2f}"


def seed_curve(runs, tag):
    """Steps and the mean, min and max over runs of one scalar; a seed missing a step is left out there."""
    steps = sorted({step for run in runs for step in run["scalars"].get(tag, {})})
    per_step = [[run["scalars"][tag][s] for run in runs if s in run["scalars"].get(tag, {})] for s in steps]
    return (steps, [np.mean(v) for v in per_step], [min(v) for v in per_step], [max(v) for v in per_step])


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------
def plot_line(ax, x, mean, lo, hi, color, linestyle, label, n_runs):
    """The mean line, with markers when there are few points and a min-max band over several runs."""
    ax.plot(x, mean, color=color, linestyle=linestyle, label=label, linewidth=1.6,
            marker="o" if len(x) <= 20 else None, markersize=3)
    if n_runs > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)


def plot_panel(ax, seeds, name, ylabel):
    """One panel: train (solid) and val (dashed) of one quantity, both frameworks."""
    last_epoch = 1
    for fw in FRAMEWORKS:
        runs = trained_runs(seeds, fw)
        for split, style in (("train", "-"), ("val", "--")):
            steps, mean, lo, hi = seed_curve(runs, f"{split}/{name}")
            if steps:
                plot_line(ax, steps, mean, lo, hi, COLORS[fw], style, f"{fw} {split}", len(runs))
                last_epoch = max(last_epoch, steps[-1])
    ax.set_xlim(0.5, last_epoch + 0.5)  # also sensible after a single epoch
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig, path):
    write_file(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def stage_figure(tag, stage, seeds, path):
    """img/<tag>_<stage>.png: loss and top-1 per epoch, torch vs jittor."""
    fig, (ax_loss, ax_top1) = plt.subplots(1, 2, figsize=(10, 3.5))
    plot_panel(ax_loss, seeds, "loss", "loss")
    plot_panel(ax_top1, seeds, "top1", "top-1 (%)")
    n_runs = max(len(trained_runs(seeds, fw)) for fw in FRAMEWORKS)  # finished runs only, as drawn
    band = f"mean and min-max over {n_runs} seeds" if n_runs > 1 else f"{n_runs} seed"
    ax_loss.set_title(f"{stage}: loss")
    ax_top1.set_title(f"{stage}: top-1 accuracy")
    fig.suptitle(f"{tag} / {stage}  (solid = train, dashed = val; {band})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------
def top1_row(stage, seeds):
    """One row of the accuracy table: val and test top-1 per framework, their difference against the seed spread."""
    get = lambda f: {fw: over_seeds(seeds, fw, f) for fw in FRAMEWORKS}
    final, best, test = get(lambda r: final_value(r, "val/top1")), get(lambda r: best_value(r, "val/top1")), get(test_top1)
    if test["torch"] and test["jittor"]:
        diff, spread = diff_cell(test), spread_cell(test)
    else:  # a framework has no test in its records: compare final val top-1, and say so
        diff = diff_cell(final) + (" (val)" if final["torch"] and final["jittor"] else "")
        spread = spread_cell(final)
        spread += " (val)" if spread != DASH else ""
    cells = [fmt(v[fw]) for v in (final, best) for fw in FRAMEWORKS]
    cells += [with_diverged(fmt(test[fw]), seeds, fw) for fw in FRAMEWORKS]
    return [stage] + cells + [diff, spread]


def time_row(stage, seeds):
    """One row of the time table: the first epoch, the later epochs' seconds per epoch and the whole
    stage, per framework, with jittor/torch ratios. The steady ratio is the frameworks' speed; the first
    epoch adds Jittor's kernel compilation."""
    cells = [stage]
    for get in (first_epoch_seconds, steady_epoch_seconds, stage_seconds):
        seconds = {fw: over_seeds(seeds, fw, get) for fw in FRAMEWORKS}
        cells += [fmt(seconds[fw], 1) for fw in FRAMEWORKS] + [ratio_cell(seconds)]
    return cells


def seeds_phrase(groups):
    """'mean ± std ... over 2 seeds (0, 1)', or '1 seed (0)', for the groups of a table, counting the
    seeds with a result (finished or diverged), not those still training."""
    done = {key: {seed for seed, runs in seeds.items() if any(map(has_result, runs.values()))}
            for key, seeds in groups.items()}
    counts = sorted({len(seeds) for seeds in done.values()})
    seeds = ", ".join(map(str, sorted(set().union(*done.values()))))
    if counts == [1]:
        return f"1 seed ({seeds})"
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} (depending on the row)"
    return f"mean ± std (ddof=1) over {n} seeds ({seeds})"


def unfinished_line(groups):
    """A line naming the runs with no result yet (still training, or stopped), with their last epoch."""
    names = [f"{key}/s{seed}/{fw} (epoch {max(run['scalars'].get('val/top1', {0: 0}))})"
             for key, seeds in groups.items() for seed, runs in sorted(seeds.items())
             for fw, run in runs.items() if not has_result(run)]
    return (f"\nStill training or stopped, so left out of every number and curve (no finished result.json; last "
            f"logged epoch in brackets): {', '.join(names)}.\n" if names else "")


def moved_line(groups):
    """A line naming the runs resumed on another machine (device, CPU threads or processes), which are not bit for
    bit the uninterrupted run (docs/checkpoints.md), with where their later epochs ran."""
    names = [f"{key}/s{seed}/{fw} (" + "; ".join(f"from epoch {m['from_epoch']}: {describe_machine(m)}"
                                                  for m in run["ran_on"][1:]) + ")"
             for key, seeds in groups.items() for seed, runs in sorted(seeds.items())
             for fw, run in runs.items() if len(run["ran_on"]) > 1]
    return (f"\nResumed on another machine (device, CPU threads or processes), so not bit for bit the uninterrupted run: "
            f"{', '.join(names)}.\n" if names else "")


def image_links(figures, base_dir):
    """Markdown image links, relative to the folder of the file they go into."""
    return "\n\n".join(f"![{name}]({os.path.relpath(path, base_dir).replace(os.sep, '/')})"
                       for name, path in figures.items())


def stage_markdown(tag, runs, figures, base_dir, against=None, flags=""):
    stages = [stage for stage in STAGES if stage in runs]
    top1 = table(["stage"] + [f"{what} {fw}" for what in ("final val top-1", "best val top-1", "test top-1")
                              for fw in FRAMEWORKS] + ["Δ top-1 (jittor − torch)", "\\|Δ\\| / seed std"],
                 [top1_row(stage, runs[stage]) for stage in stages])
    times = table(["stage"] + [f"{what} {fw}" if fw else f"{what} jittor/torch"
                               for what in ("first epoch s", "later s/epoch", "total s") for fw in (*FRAMEWORKS, None)],
                  [time_row(stage, runs[stage]) for stage in stages])
    note = (f"Top-1 in %, {seeds_phrase(runs)}. Δ is on test top-1 "
            f"(on final val top-1 where marked \"(val)\": not tested). |Δ| / seed std divides it by the "
            f"pooled seed-to-seed std, sqrt((std_torch² + std_jittor²) / 2): below about 1, the frameworks "
            f"differ less than two seeds of one framework typically do (needs 2+ seeds). A run whose training "
            f"loss became NaN is marked diverged and left out of every number and curve. Generated by "
            f"`python report.py --tag {tag}{flags}` from the TensorBoard event files and result.json records under "
            f"log/{tag}/; "
            f"do not edit by hand.")
    time_note = ("Seconds (data loading + training + evaluation): the first epoch, which holds Jittor's kernel "
                 "compilation (cached for later runs), apart from the later epochs' mean per epoch, the steady "
                 "speed; ratio of the means, jittor / torch:")
    return "\n".join([note, unfinished_line(runs), moved_line(runs), top1, "", gain_markdown(runs), "",
                      against_markdown(tag, runs, *against) if against else "", time_note, "", times, "",
                      image_links(figures, base_dir)])


def paired_top1(runs, stage, other_runs, other_stage, framework):
    """[(test top-1 of runs' stage, of other_runs' other_stage)], seed by seed, for the seeds where both
    have a test in this framework."""
    pairs = []
    for seed, by_fw in sorted(runs[stage].items()):
        run, other = by_fw.get(framework), other_runs.get(other_stage, {}).get(seed, {}).get(framework)
        if run and other and run["test"] and other["test"]:
            pairs.append((test_top1(run), test_top1(other)))
    return pairs


def paired_gains(runs, stage, framework):
    """Test top-1 of a distilled student minus the CE student's, seed by seed: the same seed gives
    both the same initial weights and the same batches, so the difference is the distillation's."""
    return [a - b for a, b in paired_top1(runs, stage, runs, "student_ce", framework)]


def gain_markdown(runs):
    """The distilled students against the CE-only student trained with the same budget, per framework."""
    stages = [stage for stage in STAGES[2:] if stage in runs]
    if "student_ce" not in runs or not stages:
        return ""
    rows = [[f"{stage} − student_ce"] + [fmt(paired_gains(runs, stage, fw), sign=True) for fw in FRAMEWORKS]
            for stage in stages]
    return ("Gain of distillation over the CE-only student (same seed, epochs and data), in test top-1 "
            "points, mean ± std over seeds:\n\n" + table(["test top-1 gain", *FRAMEWORKS], rows))


def against_markdown(tag, runs, other_tag, other_runs):
    """--against TAG: each stage's test top-1 here minus the same stage's and seed's in TAG (an R-Drop
    teacher and its students against the plain ones, say), per framework, over the seeds both have."""
    rows = []
    for stage in [s for s in STAGES if s in runs and s in other_runs]:
        cells = [stage]
        for fw in FRAMEWORKS:
            pairs = paired_top1(runs, stage, other_runs, stage, fw)
            cells += [fmt([a for a, _ in pairs]), fmt([b for _, b in pairs]), fmt([a - b for a, b in pairs], sign=True)]
        rows.append(cells)
    if not rows:
        return f"No stage has a test both here and in {other_tag}: nothing to compare yet.\n"
    header = ["stage"] + [f"{what} {fw}" for fw in FRAMEWORKS for what in (tag, other_tag, "Δ")]
    return (f"Test top-1 of {tag} against {other_tag}, same stage and seed, per framework (Δ = {tag} − {other_tag}, "
            f"seed by seed):\n\n" + table(header, rows) + "\n")


# ----------------------------------------------------------------------------
# DKD beta sweep
# ----------------------------------------------------------------------------
def sweep_top1(run):
    """(top-1, source): test top-1 if the run was tested, else final val top-1."""
    return (test_top1(run), "test") if run["test"] else (final_value(run, "val/top1"), "val")


def sweep_values(runs, beta, framework):
    """Top-1 over seeds at one beta, and whether any of them is a val (not test) number."""
    pairs = over_seeds(runs[beta], framework, sweep_top1)
    return [v for v, _ in pairs if v is not None], any(src == "val" for _, src in pairs)


def sweep_figure(tag, runs, path):
    """img/<tag>_beta_sweep.png: top-1 against beta, both frameworks, min-max band over seeds."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for fw in FRAMEWORKS:
        points = [(beta, sweep_values(runs, beta, fw)[0]) for beta in sorted(runs)]
        points = [(beta, v) for beta, v in points if v]
        if points:
            betas, values = [b for b, _ in points], [v for _, v in points]
            plot_line(ax, betas, [np.mean(v) for v in values], [min(v) for v in values],
                      [max(v) for v in values], COLORS[fw], "-", fw, max(len(v) for v in values))
    bottom = ax.get_ylim()[0]
    for fw in FRAMEWORKS:  # betas where every seed diverged: a cross on the bottom edge
        lost = [beta for beta in sorted(runs) if diverged_epochs(runs[beta], fw) and not sweep_values(runs, beta, fw)[0]]
        if lost:
            ax.plot(lost, [bottom] * len(lost), linestyle="none", marker="x", markersize=9, color=COLORS[fw],
                    label=f"{fw} diverged", clip_on=False)
    ax.set_xticks(sorted(runs))
    ax.set_xlabel("DKD beta (weight of the non-target term)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{tag}: DKD beta sweep (test top-1; final val where not tested)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def sweep_row(runs, beta):
    values, cells = {}, [f"{beta:g}"]
    for fw in FRAMEWORKS:
        values[fw], from_val = sweep_values(runs, beta, fw)
        cells.append(with_diverged(fmt(values[fw]) + (" (val)" if from_val else ""), runs[beta], fw))
    return cells + [diff_cell(values)]


def sweep_markdown(tag, runs, figures, base_dir, flags=""):
    rows = table(["beta"] + [f"top-1 {fw}" for fw in FRAMEWORKS] + ["Δ (jittor − torch)"],
                 [sweep_row(runs, beta) for beta in sorted(runs)])
    note = (f"DKD student top-1 (%) on the test set against beta (\"(val)\": final val top-1, not tested; "
            f"diverged: the training loss became NaN at that epoch), "
            f"{seeds_phrase(runs)}. Generated by `python report.py --tag {tag} --sweep{flags}` "
            f"from the TensorBoard event files and result.json records under log/{tag}/; do not edit by hand.")
    return "\n".join([note, unfinished_line(runs), rows, "", image_links(figures, base_dir)])


# ----------------------------------------------------------------------------
# The terminal: one narrow table (the wide ones are in the report file)
# ----------------------------------------------------------------------------
def gain_cell(runs, stage):
    """'torch gain / Jittor gain' over the CE student of the same seeds; a dash for teacher and CE."""
    if stage in ("teacher", "student_ce") or "student_ce" not in runs:
        return DASH
    cells = [fmt(paired_gains(runs, stage, fw), sign=True) for fw in FRAMEWORKS]
    return DASH if all(c == DASH for c in cells) else " / ".join(cells)


def narrow_stage_table(runs):
    """Per stage: test top-1 per framework, Jittor − torch, and the gain over CE; for a terminal."""
    rows = []
    for stage in [s for s in STAGES if s in runs]:
        test = {fw: over_seeds(runs[stage], fw, test_top1) for fw in FRAMEWORKS}
        rows.append([stage] + [short_diverged(fmt(test[fw]), runs[stage], fw) for fw in FRAMEWORKS]
                    + [diff_cell(test), gain_cell(runs, stage)])
    labels = [LABELS[fw] for fw in FRAMEWORKS]
    header = ["stage", *labels, "Δ", f"gain over CE ({' / '.join(labels)})"]
    return f"Test top-1 (%), {seeds_phrase(runs)}:\n\n" + table(header, rows, "simple")


def narrow_sweep_table(runs):
    """Per beta: the DKD student's top-1 per framework and Jittor − torch; for a terminal."""
    rows = []
    for beta in sorted(runs):
        values = {fw: sweep_values(runs, beta, fw) for fw in FRAMEWORKS}
        cells = [short_diverged(fmt(v) + (" (val)" if from_val else ""), runs[beta], fw)
                 for fw, (v, from_val) in values.items()]
        rows.append([f"{beta:g}"] + cells + [diff_cell({fw: v for fw, (v, _) in values.items()})])
    return (f"DKD student test top-1 (%) against beta, {seeds_phrase(runs)}:\n\n"
            + table(["beta", *[LABELS[fw] for fw in FRAMEWORKS], "Δ"], rows, "simple"))


def shown(path):
    """A path as short as it is clear: relative to the repository when inside it."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


# ----------------------------------------------------------------------------
# Files: report.md and the block between the markers of README.md or a docs/ page
# ----------------------------------------------------------------------------
def write_file(path, write_fn):
    """common.files.atomic_write (binary), keeping the file's permissions (its temp file is owner-only)."""
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    atomic_write(path, write_fn)
    os.chmod(path, mode)


def write_text(path, text):
    write_file(path, lambda f: f.write(text.encode("utf-8")))


def replace_block(text, key, block):
    """text with block between the report:<key> markers; None if the markers are missing."""
    start, end = f"<!-- report:{key}:start -->", f"<!-- report:{key}:end -->"
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if j < 0:
        return None
    return text[:i + len(start)] + "\n" + block + "\n" + text[j:]


def read_text(path):
    with open(path, encoding="utf-8", newline="") as f:  # newline="": keep the file's line ends
        return f.read()


def marked_doc(key):
    """The first of README.md and docs/*.md that holds the report:<key> markers, or None."""
    candidates = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return next((p for p in candidates if replace_block(read_text(p), key, "") is not None), None)


def check_doc(doc, key):
    """--doc FILE must hold the report:<key> markers: say so before any file is written."""
    if not os.path.isfile(doc):
        die(f"--doc {doc}: no such file")
    if replace_block(read_text(doc), key, "") is None:
        die(f"--doc {doc}: markers missing, so no file was changed. To insert the tables, put the two "
            f"markers <!-- report:{key}:start --> and <!-- report:{key}:end --> where they should go.")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="quick", help="run tag: reads log/<tag>/ (default quick, run_all.py's default)")
    parser.add_argument("--sweep", action="store_true",
                        help="DKD beta sweep: runs <tag>/student_dkd_beta<beta>_s<seed>, top-1 against beta")
    parser.add_argument("--doc", default=None,
                        help="markdown file holding the report markers (default: the first of README.md and "
                             "docs/*.md that holds them, if any)")
    parser.add_argument("--img-dir", default=IMG_DIR, help="folder for the PNG figures (default img/)")
    parser.add_argument("--log-only", action="store_true",
                        help="no figures and no docs/ page: the tables go only to log/<tag>/report.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="only these seeds (e.g. 0 1 while seed 2 still trains), so that every row compares "
                             "the same seeds in both frameworks (default: every seed under log/<tag>/)")
    parser.add_argument("--against", default=None, metavar="TAG",
                        help="add a table of each stage's test top-1 against the same stage and seed of run tag TAG")
    args = parser.parse_args(argv)
    if args.log_only and args.doc:
        parser.error("--log-only changes no docs page: leave out --doc")
    return args


def main(argv=None):
    """Read the runs; draw the figures, write every table to log/<tag>/report.md and into the page holding
    the tag's markers; print the narrow table and the report file's name. Returns the tables' markdown."""
    args = parse_args(argv)
    log_dir = os.path.join(LOG_DIR, args.tag)
    flags = f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else ""  # in the tables' "Generated by"
    if args.sweep:
        runs = find_runs(args.tag, SWEEP_RUN, key=float, seeds=args.seeds)
        figures = {"beta sweep": os.path.join(args.img_dir, f"{args.tag}_beta_sweep.png")}
        draw = lambda: sweep_figure(args.tag, runs, figures["beta sweep"])
        key, out, markdown, narrow = f"{args.tag}-sweep", "report_sweep.md", sweep_markdown, narrow_sweep_table
    else:
        runs = find_runs(args.tag, STAGE_RUN, seeds=args.seeds)
        # no figure where no run finished without diverging (all diverged, or still training): it would be empty
        figures = {stage: os.path.join(args.img_dir, f"{args.tag}_{stage}.png") for stage in STAGES
                   if stage in runs and any(trained_runs(runs[stage], fw) for fw in FRAMEWORKS)}
        draw = lambda: [stage_figure(args.tag, stage, runs[stage], path) for stage, path in figures.items()]
        key, out, markdown, narrow = args.tag, "report.md", stage_markdown, narrow_stage_table
        if args.against:
            other = (args.against, find_runs(args.against, STAGE_RUN, seeds=args.seeds))
            markdown = functools.partial(stage_markdown, against=other)
    if args.doc:
        check_doc(args.doc, key)
    doc = None if args.log_only else args.doc or marked_doc(key)  # none for most tags: nothing to say then
    if args.log_only:
        figures = {}
    else:
        draw()
    path = os.path.join(log_dir, out)
    write_text(path, markdown(args.tag, runs, figures, log_dir, flags=flags) + "\n")
    block = markdown(args.tag, runs, figures, os.path.dirname(os.path.abspath(doc)) if doc else log_dir, flags=flags)
    if doc:
        write_text(doc, replace_block(read_text(doc), key, block))
    print(narrow(runs))
    print(f"\nEvery table{'' if args.log_only else ' and figure'}: {shown(path)}")
    if doc:
        print(f"The tables also updated in {shown(doc)}")
    return block


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # a full disk while writing a figure or report file (common.files.DiskFullError)
        die(str(e))
