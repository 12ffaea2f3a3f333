"""The house plan, checked: the layers of slotmgr/ and what each may use.

  base     errors, deadline, naming, pidshim (slotmgr/*.py)
  kernel   /proc and cgroup files          systemd  the bus, messages, the manager
  history  records, their store, queries   node     the node's settings and slots
  job      run, scope, stop, kill, adopt   cli      the command line

A module imports only from layers below its own (or its own package), so
each layer can be read, and tested, without those above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "slotmgr"
# Packages of the same floor may not import each other.
FLOORS = {
    "": 0,
    "kernel": 1,
    "systemd": 1,
    "history": 2,
    "node": 2,
    "job": 3,
    "cli": 4,
    "__main__": 5,
}
MAX_LINES = 600
MAX_TOP_LEVEL_MODULES = 10


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:
        return "__main__" if parts[0] == "__main__.py" else ""
    return parts[0]


def _layer_of_name(name: str) -> str:
    parts = name.split(".")
    assert parts[0] == "slotmgr"
    if len(parts) == 1:
        return ""
    return parts[1] if (PACKAGE / parts[1]).is_dir() else ""


def _imports(tree: ast.AST) -> list[str]:
    """Every slotmgr module a file imports, at the top or inside a function."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("slotmgr")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slotmgr"):
            assert node.module is not None
            if node.module == "slotmgr":
                found += [f"slotmgr.{a.name}" for a in node.names if a.name != "__version__"]
            else:
                found.append(node.module)
    return found


def test_the_package_top_holds_few_modules_and_none_is_long() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_sub_package_faces_are_empty() -> None:
    """Importing a layer costs nothing beyond the modules asked for."""
    for init in PACKAGE.glob("*/__init__.py"):
        assert init.read_text() == "", init


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_from_below_its_layer(path: Path) -> None:
    layer = _layer(path)
    for name in _imports(ast.parse(path.read_text())):
        other = _layer_of_name(name)
        assert other == layer or FLOORS[other] < FLOORS[layer], f"{layer or 'base'} imports {name}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_systemd_layer_touches_the_bus(path: Path) -> None:
    if _layer(path) == "systemd":
        return
    tree = ast.parse(path.read_text())
    assert "slotmgr.systemd.bus" not in _imports(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n.startswith("jeepney") for n in names), "jeepney"
        if isinstance(node, ast.Attribute):
            assert node.attr != "conn", f"line {node.lineno}: .conn outside slotmgr/systemd/"


def _code_strings(tree: ast.AST) -> list[str]:
    """String constants that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_the_unit_prefix_and_the_job_id_grammar_are_defined_once() -> None:
    holders: dict[str, list[str]] = {}
    for path in _modules():
        if path.name == "pidshim.py":
            continue  # standard library only, run as files: know no job names
        strings = _code_strings(ast.parse(path.read_text()))
        # slotmgr-ingest.timer is a unit of the package's, not a job's name.
        if any("slotmgr-" in s.replace("slotmgr-ingest", "") for s in strings):
            holders.setdefault("slotmgr-", []).append(path.name)
        if any("A-Za-z0-9_.:-" in s for s in strings):
            holders.setdefault("job id", []).append(path.name)
    assert holders == {"slotmgr-": ["naming.py"], "job id": ["naming.py"]}


def test_the_files_live_units_name_by_path_stay_where_they_were() -> None:
    """A unit started before an upgrade runs these by path after it: they
    stay at the package's top whatever moves around them."""
    from slotmgr.history.hook import HOOK
    from slotmgr.job.spec import PIDSHIM

    assert Path(PIDSHIM) == PACKAGE / "pidshim.py" and Path(PIDSHIM).is_file()
    assert Path(HOOK) == PACKAGE / "stophook.sh" and Path(HOOK).is_file()
