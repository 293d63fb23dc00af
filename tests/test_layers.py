"""The floors are a test: the import-linter contract (.importlinter) holds, it breaks on a planted
upward import, the project's modules import each other without a cycle, and the production
modules import project modules at their top (the CLI alone defers them, see smescore/cli.py)."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("smescore", "beam_jobs", "transforms", "models", "synth", "bench", "service")
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def lint_imports(root: str) -> subprocess.CompletedProcess:
    """`lint-imports` over the packages under `root` (they shadow any installed copy)."""
    env = {**os.environ, "PYTHONPATH": root}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def copy_packages(dst) -> str:
    """The packages' .py files and the contract, copied to plant imports in."""
    for pkg in PACKAGES:
        shutil.copytree(os.path.join(ROOT, pkg), os.path.join(dst, pkg),
                        ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.sql"))
    shutil.copy(os.path.join(ROOT, ".importlinter"), dst)
    return str(dst)


def plant(root: str, module: str, line: str) -> None:
    with open(os.path.join(root, *module.split(".")) + ".py", "a", encoding="utf-8") as fh:
        fh.write(f"\n{line}  # planted by the test\n")


def import_cycles(root: str) -> list[list[str]]:
    """Strongly connected components (Tarjan) of more than one module, or a module importing
    itself, in the graph of direct imports grimp finds (function-level imports included), in a
    fresh interpreter: grimp locates a package through the import system, so one this process
    already imported would be read from there instead of from `root`."""
    result = subprocess.run([sys.executable, "-c", _COUNT_CYCLES, *PACKAGES], cwd=root,
                            env={**os.environ, "PYTHONPATH": root}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


_COUNT_CYCLES = """
import importlib.util, json, os, sys
import grimp
packages = sys.argv[1:]
graph = grimp.build_graph(*packages, cache_dir=None)
for pkg in packages:         # read from the folder asked for, not an installed copy
    origin = importlib.util.find_spec(pkg).origin
    assert os.path.dirname(os.path.dirname(origin)) == os.getcwd(), (pkg, origin)
edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
index, low, stack, on_stack, cycles = {}, {}, [], set(), []
sys.setrecursionlimit(10_000)

def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while not component or component[-1] != v:
            component.append(stack.pop())
            on_stack.discard(component[-1])
        if len(component) > 1 or v in edges[v]:
            cycles.append(sorted(component))

for module in edges:
    if module not in index:
        visit(module)
print(json.dumps(sorted(cycles)))
"""


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


def test_a_planted_models_to_beam_jobs_import_breaks_the_contracts(tmp_path):
    root = copy_packages(tmp_path)
    assert lint_imports(root).returncode == 0           # the copy holds before the plant
    plant(root, "models.metrics", "from beam_jobs import sources")
    result = lint_imports(root)
    assert result.returncode == 1
    out = " ".join(result.stdout.split())
    assert "Model code never imports the pipelines BROKEN" in out
    assert "models.metrics -> beam_jobs.sources" in out
    assert "Contracts: 2 kept, 3 broken." in out      # also the floors and the core's no-Beam


def test_no_import_cycles_among_the_project_modules():
    assert import_cycles(ROOT) == []


def test_the_cycle_count_finds_a_planted_cycle(tmp_path):
    root = copy_packages(tmp_path)
    plant(root, "transforms.catalog", "from transforms import pit")   # pit imports catalog
    assert import_cycles(root) == [["transforms.catalog", "transforms.pit"]]


def _deferred_project_imports(path: str) -> list[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    lines = open(path, encoding="utf-8").read().splitlines()
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in PACKAGES for n in names):
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: "
                             f"{lines[node.lineno - 1].strip()}")
    return found


def test_production_modules_import_project_modules_at_their_top():
    deferred = []
    for pkg in ("smescore", "beam_jobs", "transforms", "models", "synth"):
        for base, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in sorted(files):
                path = os.path.join(base, name)
                if name.endswith(".py") and path != os.path.join(ROOT, "smescore", "cli.py"):
                    deferred += _deferred_project_imports(path)
    assert deferred == []


def _arrow_allocator_options(code: str, **env) -> str:
    """mimalloc's own report of its options in a fresh interpreter that runs `code`."""
    clean = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ALLOW_THP"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**clean, "MIMALLOC_VERBOSE": "1", **env}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.mark.parametrize("module", ["beam_jobs.score_portfolio", "transforms.beam_features",
                                    "models.signature", "service.app", "synth.generate",
                                    "bench.nightly_scale"])
def test_every_package_turns_off_arrows_huge_pages_before_pyarrow_loads(module):
    # Each package's first import is smescore's, which sets MIMALLOC_ALLOW_THP=0 before its own
    # modules load pyarrow (and mimalloc reads it, once); with huge pages, a sort of 8.3M rows
    # spent 10 s in the kernel.
    report = _arrow_allocator_options(
        f"import {module}, pyarrow as pa; pa.allocate_buffer(1 << 20)")
    assert "option 'allow_thp': 0" in report
    assert "option 'allow_thp': 1" not in report


def test_pyarrow_alone_and_an_operators_setting_keep_their_huge_pages():
    # The check above can fail: without smescore first, mimalloc's default (on) stands, and an
    # operator's explicit setting wins over smescore's.
    plain = "import pyarrow as pa; pa.allocate_buffer(1 << 20)"
    assert "option 'allow_thp': 1" in _arrow_allocator_options(plain)
    assert "option 'allow_thp': 1" in _arrow_allocator_options(
        "import beam_jobs.score_portfolio; " + plain, MIMALLOC_ALLOW_THP="1")
