"""The house rules, read from the source with ast: no import cycle among the repo's modules, no module
imports a stage file (a stage is a program: flags, build, run, report), and the torch/Jittor rooms mirror
each other (same files, same top-level names)."""
import ast
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = {f"{fw}_.{stage}" for fw in ("torch", "jittor") for stage in ("train_teacher", "train_student", "test")}
# names one framework needs and the other has built in: torch's autograd Function for an all-reduce whose backward
# all-reduces (Jittor's mpi_all_reduce is differentiable already)
FRAMEWORK_ONLY = {"AllReduceSum"}
# modules one framework needs and the other has built in: Jittor's multi-threaded CPU kernels for BatchNorm and
# the max-pool (Jittor's own generated kernels run on one thread; torch's ops use every core already)
FRAMEWORK_ONLY_MODULES = {"jittor_/kernels.py"}


def tracked_modules():
    """{module name: path} of the tracked Python files (tests and scripts included)."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {path[:-3].replace("/", ".").removesuffix(".__init__"): os.path.join(ROOT, path) for path in files.split()}


def imports_of(path, modules):
    """The repo modules a file imports, at any depth of its code (imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph():
    modules = tracked_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, f"import cycle: {' -> '.join(find_cycle(import_graph()))}"


def test_cycle_finder_finds_a_cycle():
    """The checker itself: a graph with a cycle is caught, one without is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_nothing_imports_a_stage_file():
    offenders = {name: sorted(deps & STAGES) for name, deps in import_graph().items() if deps & STAGES}
    assert not offenders, f"modules importing a stage file: {offenders}"


def test_rooms_have_the_same_files():
    """torch_/ and jittor_/ hold the same modules, but for FRAMEWORK_ONLY_MODULES."""
    def files(fw):
        return {name for name in os.listdir(os.path.join(ROOT, f"{fw}_")) if name.endswith(".py")
                and f"{fw}_/{name}" not in FRAMEWORK_ONLY_MODULES}
    assert files("torch") == files("jittor")
    assert all(os.path.isfile(os.path.join(ROOT, path)) for path in FRAMEWORK_ONLY_MODULES)


@pytest.mark.parametrize("room", ["dataset", "device", "distillers", "engine", "features", "models", "parallel",
                                  "train_teacher", "train_student", "test"])
def test_rooms_mirror_each_other(room):
    """Both frameworks have the room, with the same top-level functions and classes in the same order."""
    def names(fw):
        tree = ast.parse(open(os.path.join(ROOT, f"{fw}_", f"{room}.py")).read())
        return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                and n.name not in FRAMEWORK_ONLY]
    assert names("torch") == names("jittor")
