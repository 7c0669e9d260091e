#!/usr/bin/env bash
# The line counts issue 30's targets use: sfc_core in all, sfc_core/method, functions over
# 60 lines (def line to last line) and functions over 8 parameters (self/cls not counted;
# *args and **kwargs count) across sfc_core and benchmarks. Usage: bash scripts/line_counts.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
"$python" - <<'EOF'
import ast
from pathlib import Path

def lines(folder):
    return sum(len(p.read_text().splitlines()) for p in Path(folder).rglob("*.py"))

print(f"sfc_core: {lines('sfc_core')} lines")
print(f"sfc_core/method: {lines('sfc_core/method') if Path('sfc_core/method').is_dir() else 0} lines")
long, wide = [], []
for path in sorted([*Path("sfc_core").rglob("*.py"), *Path("benchmarks").rglob("*.py")]):
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        where = f"{path}:{node.lineno} {node.name}"
        length = node.end_lineno - node.lineno + 1
        a = node.args
        names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
        count = len([n for n in names if n not in ("self", "cls")]) + bool(a.vararg) + bool(a.kwarg)
        if length > 60:
            long.append((length, where))
        if count > 8:
            wide.append((count, where))
print(f"functions over 60 lines: {len(long)}")
for n, where in sorted(long, reverse=True):
    print(f"  {n:4d} lines  {where}")
print(f"functions over 8 parameters: {len(wide)}")
for n, where in sorted(wide, reverse=True):
    print(f"  {n:4d} params {where}")
EOF
