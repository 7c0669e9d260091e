"""The import layers docs/architecture.md describes, read from the source with ``ast``.

Stages (the modules the CLI's verb table names inside sfc_core, with their submodules) import
only the foundation; the foundation imports no stage and no tooling; tooling (analysis,
orchestration, benchmarks, ``__main__``) may import anything. The method folder
(``sfc_core.method``) imports torch, torchvision, numpy, the standard library and itself only.
Every import counts, lazy ones inside functions too, and importing ``a.b.c`` counts as importing
``a`` and ``a.b`` (their ``__init__`` runs).
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from sfc_core.cli import VERBS

REPO = Path(__file__).resolve().parents[1]
TOOLING_PACKAGES = ("sfc_core.analysis", "sfc_core.orchestration", "benchmarks")
TOOLING_MODULES = ("sfc_core.__main__",)
METHOD = "sfc_core.method"
METHOD_LIBRARIES = {"torch", "torchvision", "numpy", *sys.stdlib_module_names}
STAGE_PARTS = {"sfc_core.data.prepare_coco": "sfc_core.data.prepare"}   # a stage split over two files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in ("sfc_core", "benchmarks") for p in (REPO / package).rglob("*.py")}
STAGES = sorted({module for _, module, _, _ in VERBS if module.startswith("sfc_core.")})


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def stage_of(module: str) -> str | None:
    """The stage a module belongs to (itself, the stage package holding it, or the stage
    STAGE_PARTS names), else None."""
    if module in STAGE_PARTS:
        return STAGE_PARTS[module]
    owners = [stage for stage in STAGES if _within(module, stage)]
    return max(owners, key=len) if owners else None


def layer(module: str) -> str:
    if module in TOOLING_MODULES or any(_within(module, p) for p in TOOLING_PACKAGES):
        return "tooling"
    return "stage" if stage_of(module) else "foundation"


def import_statements(module: str, path: Path) -> list[tuple[str | None, list[str]]]:
    """Each import of ``module``'s source (lazy ones too): (None, names) for ``import a, b``,
    (absolute base, names) for ``from base import names`` (relative bases resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.append((None, [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
    return found


def imported_modules(module: str, path: Path) -> set[str]:
    """Every project module that ``module`` (the source at ``path``) imports, with the packages
    above each."""
    names = set()
    for base, aliases in import_statements(module, path):
        if base is None:
            names.update(aliases)
        else:
            names.add(base)
            names.update(f"{base}.{alias}" for alias in aliases if f"{base}.{alias}" in MODULES)
    found = set()
    for name in names:
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in MODULES)
    return found


def violations() -> list[str]:
    bad = []
    for module, path in sorted(MODULES.items()):
        own = layer(module)
        if own == "tooling":
            continue
        for target in sorted(imported_modules(module, path)):
            other = layer(target)
            if other == "tooling":
                bad.append(f"{module} ({own}) imports tooling {target}")
            elif other == "stage" and stage_of(target) != stage_of(module):
                bad.append(f"{module} ({own}) imports stage {target}")
    return bad


def method_violations() -> list[str]:
    """Imports of the method folder's modules beyond torch, torchvision, numpy, the standard
    library and the folder itself (``sfc_core`` alone is its package: its ``__init__`` runs)."""
    bad = []
    for module, path in sorted(MODULES.items()):
        if not _within(module, METHOD):
            continue
        project = {t for t in imported_modules(module, path) if t != "sfc_core" and not _within(t, METHOD)}
        nodes = list(ast.walk(ast.parse(path.read_text())))
        roots = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
        roots |= {node.module.split(".")[0] for node in nodes
                  if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        libraries = roots - METHOD_LIBRARIES - {"sfc_core"}
        bad += [f"{module} imports {name}" for name in sorted(project | libraries)]
    return bad


def test_the_method_folder_imports_only_torch_numpy_and_itself():
    assert method_violations() == []


def test_the_method_checker_sees_a_violation(tmp_path, monkeypatch):
    probe = tmp_path / "probe.py"
    monkeypatch.setitem(MODULES, "sfc_core.method._probe", probe)
    probe.write_text("import torch\nfrom sfc_core.method import cam\n\n\ndef f():\n"
                     "    from sfc_core.errors import SfcError\n    import pandas\n")
    assert method_violations() == ["sfc_core.method._probe imports pandas",
                                   "sfc_core.method._probe imports sfc_core.errors"]


def test_no_stage_imports_a_stage_and_the_foundation_imports_neither():
    assert violations() == []


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """A foundation module importing a stage lazily, and a stage importing another, are found."""
    probe = tmp_path / "probe.py"
    monkeypatch.setitem(MODULES, "sfc_core._probe", probe)
    probe.write_text("def f():\n    from sfc_core.cams import make_cams\n")
    assert violations() == ["sfc_core._probe (foundation) imports stage sfc_core.cams"]
    probe.write_text("from sfc_core.refine import irn\nfrom sfc_core.analysis import plots\n")
    monkeypatch.setattr("test_layers.STAGES", [*STAGES, "sfc_core._probe"])
    assert violations() == ["sfc_core._probe (stage) imports tooling sfc_core.analysis",
                            "sfc_core._probe (stage) imports tooling sfc_core.analysis.plots",
                            "sfc_core._probe (stage) imports stage sfc_core.refine",
                            "sfc_core._probe (stage) imports stage sfc_core.refine.irn"]


@pytest.mark.parametrize("name", ["Stages", "Foundation", "Tooling"])
def test_docs_architecture_lists_every_module_in_its_layer(name):
    """docs/architecture.md's "Layers" lists are exactly the modules the test classifies."""
    text = (REPO / "docs" / "architecture.md").read_text()
    line = re.search(rf"^- {name}( \([^)]*\))?: (.*(?:\n  .*)*)", text, re.M)
    assert line, f"docs/architecture.md has no '- {name}:' line"
    listed = set(re.findall(r"`([\w.]+)`", line.group(2)))
    kind = {"Stages": "stage", "Foundation": "foundation", "Tooling": "tooling"}[name]
    assert listed == {m for m in MODULES if layer(m) == kind}


def direct_imports(module: str, path: Path) -> set[str]:
    """The project modules ``module`` names in its imports (lazy ones too): ``from a import b``
    names ``a.b`` where that is a module, else ``a``; the packages above are not counted."""
    found = set()
    for base, aliases in import_statements(module, path):
        if base is None:
            found.update(aliases)
        else:
            found.update({f"{base}.{alias}" for alias in aliases} & MODULES.keys() or {base})
    return found & MODULES.keys() - {module}


def mutual_imports() -> list[str]:
    imports = {module: direct_imports(module, path) for module, path in MODULES.items()}
    return sorted(f"{a} <-> {b}" for a in imports for b in imports[a] if a < b and a in imports[b])


def test_no_two_modules_import_each_other(tmp_path, monkeypatch):
    """Across sfc_core and benchmarks; the checker finds a pair made on purpose (a lazy import too)."""
    assert mutual_imports() == []
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("from benchmarks import _second\n")
    second.write_text("def f():\n    import benchmarks._first\n")
    monkeypatch.setitem(MODULES, "benchmarks._first", first)
    monkeypatch.setitem(MODULES, "benchmarks._second", second)
    assert mutual_imports() == ["benchmarks._first <-> benchmarks._second"]
