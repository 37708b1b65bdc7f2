"""A stage's main run in the test's own process, for error paths: no interpreter and no framework import to
pay for (a subprocess costs seconds). runpy executes the stage file as a program (nothing imports it as a
module); what the user would see on stderr and the exit code come back. tests/test_stages.py keeps the
subprocess check of the one-line contract (conftest.error_line)."""
import contextlib
import io
import os
import runpy
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stage_process(framework, stage, *args):
    """`python <framework>_/<stage>.py args` run here, as a subprocess.CompletedProcess (exit code 0 when main
    returns, stdout, stderr): what conftest.run_script gives, for conftest.error_line and the like."""
    program = runpy.run_path(os.path.join(ROOT, f"{framework}_", f"{stage}.py"), run_name="stage_in_process")
    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            program["main"](argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess([stage, *argv], code, out.getvalue(), err.getvalue())


def run_stage(framework, stage, *args):
    """(exit code, stderr) of the stage run here."""
    proc = stage_process(framework, stage, *args)
    return proc.returncode, proc.stderr


def one_line_error(framework, stage, *args):
    """The one `error: ...` line of a user error (exit 2), run in-process."""
    code, err = run_stage(framework, stage, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (code, err)
    return lines[0]
