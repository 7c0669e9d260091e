"""The environment files agree with each other, and CI runs exactly the README's test command."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.fullmatch(r"\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s#]+)\s*", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_pyproject_and_environment_yml_pin_the_same_versions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    from_pyproject = _pins(declared)
    from_conda = _pins((REPO / "environment.yml").read_text().splitlines())
    assert from_pyproject, "no pinned dependencies found in pyproject.toml"
    assert from_pyproject == from_conda
    assert from_pyproject["torch"] == "2.14.1" and from_pyproject["torchvision"] == "0.29.1"


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        assert "==" in requirement, f"{requirement} is not pinned"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    commands = [c for c in ci if not c.startswith(("set ", "cd "))]
    assert commands == ["bash run_tests.sh"]
    assert "bash run_tests.sh" in readme and "bash run_all.sh" in readme
