"""The production package does not depend on the simulator (jadd_dagster.sim).

Production is every module under jadd_dagster/ except jadd_dagster/sim/; of those, only the two
demo entry points of cli.py (`jadd make-logs`: cmd_make_logs, `jadd demo`: make_demo_logs_in) may
import the simulator, inside their own bodies. Checked twice: statically (every import statement
of every production module, absolute or relative, at any depth, and any string naming the
simulator's modules, which importlib could load), and by importing every production module in a
fresh interpreter and looking for the simulator in sys.modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import jadd_dagster

PACKAGE = Path(jadd_dagster.__file__).resolve().parent
SIM = "jadd_dagster.sim"
# (module, function) pairs that may import the simulator: the demo commands.
ALLOWED = {("jadd_dagster.cli", "cmd_make_logs"), ("jadd_dagster.cli", "make_demo_logs_in")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def production_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not p.relative_to(PACKAGE).parts[0] == "sim")


def is_sim(name: str) -> bool:
    return name == SIM or name.startswith(SIM + ".")


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute module names an ImportFrom can load (the module, and each name as a submodule)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def sim_imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str, str]]:
    """(line, enclosing top-level function or '', what) for every import of, or string naming, the
    simulator in the source of module."""
    tree = ast.parse(source, module)
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            is_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            inner = child.name if is_function and not function else function
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                names = resolve(child, module, is_package)
            elif isinstance(child, ast.Constant) and isinstance(child.value, str):
                names = [w.strip("'\"`.,:;()") for w in child.value.split()]
                names = [n for n in names if n.startswith(SIM + ".")]  # docstrings may name the package itself
            hits = [n for n in names if is_sim(n)]
            if hits:
                found.append((child.lineno, function, hits[-1]))
            visit(child, inner)

    visit(tree, "")
    return found


def test_the_simulator_is_its_own_package_and_production_is_everything_else():
    assert (PACKAGE / "sim" / "__init__.py").is_file()
    modules = {module_name(p) for p in production_modules()}
    assert {"jadd_dagster.cli", "jadd_dagster.logs.reader", "jadd_dagster.autolabel.tracking"} <= modules
    assert any(m.startswith("jadd_dagster.ingest.") for m in modules)  # the real-log adapter (MCAP) is production
    assert not any(is_sim(m) for m in modules)
    for name in ("generator", "drive", "world", "render", "lidar", "objects", "visibility"):
        assert not (PACKAGE / "logs" / f"{name}.py").exists(), f"logs/{name}.py is the simulator's"


def test_no_production_module_imports_the_simulator():
    offences = []
    for path in production_modules():
        module = module_name(path)
        for line, function, name in sim_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            if (module, function) not in ALLOWED:
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({function or 'module level'}): {name}")
    assert offences == [], "production code imports the simulator:\n" + "\n".join(offences)


def test_the_static_check_sees_every_kind_of_import():
    """The checker itself: absolute, relative and nested imports and importlib strings are caught."""
    source = (
        "import jadd_dagster.sim.render\n"
        "from jadd_dagster.sim import make_logs\n"
        "from ..sim.world import simulate_world\n"
        "from .. import sim\n"
        "def f():\n"
        "    import importlib\n"
        "    return importlib.import_module('jadd_dagster.sim.generator')\n"
        "from jadd_dagster.logs import reader\n"
        "from . import sweeps\n"
    )
    found = sim_imports(source, "jadd_dagster.autolabel.probe")
    assert [line for line, _, _ in found] == [1, 2, 3, 4, 7]
    assert found[-1][1] == "f" and found[0][1] == ""


def import_probe_scripts() -> dict[str, str]:
    """The fresh-interpreter import checks: each script prints a JSON list of offending modules."""
    names = sorted(module_name(p) for p in production_modules())
    return {
        "every production module": (
            "import importlib, json, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m == {SIM!r} or m.startswith({SIM + '.'!r}))))\n"
        ),
        "the code location": (
            "import json, sys\n"
            "import jadd_dagster.definitions, jadd_dagster.cli, jadd_dagster.ingest\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'rosbags'\n"
            "                        or m == 'jadd_dagster.ingest.rosbag_reader')))\n"
        ),
    }


@pytest.fixture(scope="module")
def import_probes() -> dict[str, subprocess.Popen]:
    """Both import checks started at once, each in its own interpreter (each spends seconds importing)."""
    probes = {name: subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=PACKAGE.parent)
              for name, script in import_probe_scripts().items()}
    yield probes
    for probe in probes.values():  # one whose test did not run (deselected, or failed early)
        if probe.poll() is None:
            probe.kill()
            probe.communicate()


def probe_output(probe: subprocess.Popen) -> list[str]:
    out, err = probe.communicate(timeout=300)
    assert probe.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_importing_every_production_module_loads_no_simulator_module(import_probes):
    assert probe_output(import_probes["every production module"]) == []


def test_the_code_location_does_not_import_the_rosbag2_reader(import_probes):
    """Every Dagster run and step process imports the code location; rosbags (and ruamel.yaml with
    it) took seconds to import and only bags need it, so the rosbag2 reader is imported when a
    bag is converted, not before."""
    assert probe_output(import_probes["the code location"]) == []
