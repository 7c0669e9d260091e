"""The set-up every notebook runs first, from its papermill parameters, and the executed
copies of the notebooks that run_all.sh publishes in docs/notebooks/.

    cfg, run_root, figures_dir = setup(preset, data_root, run_root, figures_dir, smoke, config_file, overrides)
    python -m sfc_core.analysis.notebook runs/synthetic-paper/executed docs/notebooks   # run_all.sh
    failure_message(executed, log)       # what run_all.sh prints when a notebook stops
"""
from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from sfc_core.config import Config, read_changes

# The resolution of the figures a notebook displays (not of the PNGs written): keeps executed copies small.
FIGURE_DPI_ENV = "SFC_FIGURE_DPI"
MAX_COPY_BYTES = 2 * 1024 * 1024     # the size an executed copy in docs/notebooks/ must stay under
REWRITTEN = re.compile(r"[^\n]*\r(?=[^\n])")   # a line's text up to a carriage return that rewrites it


def setup(preset: str, data_root: str, run_root: str, figures_dir: str, smoke: bool,
          config_file: str = "", overrides: Sequence[str] = ()) -> tuple[Config, Path, Path]:
    """(config, run root, figures folder) of a notebook's parameters, from the repository root."""
    if Path.cwd().name == "notebooks":
        os.chdir("..")
    _inline_figures(os.environ.get(FIGURE_DPI_ENV))
    changes = read_changes(config_file, list(overrides))[1]
    cfg = Config.from_preset("synthetic-smoke" if smoke else preset,
                             {**changes, **({"data.root": data_root} if data_root else {})})
    changed = f"; changed: {', '.join(sorted(changes))}" if changes else ""
    print(f"preset {cfg.preset}, dataset {cfg.data.dataset} at {cfg.data.root or '(none given)'}, "
          f"runs in {run_root}{changed}")
    return cfg, Path(run_root), Path(figures_dir)


def failure_message(executed: str | Path, log: str | Path) -> str:
    """What stopped a notebook: the executed copy's first error, else papermill's last log line."""
    try:
        cells = json.loads(Path(executed).read_text()).get("cells", [])
    except (OSError, ValueError):
        cells = []
    for cell in cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                name, value = output.get("ename", ""), output.get("evalue", "")
                return f"error: {value}" if name == "SfcError" else f"error: {name}: {value}"
    try:
        lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return f"error: no cell raised; papermill's log ends: {lines[-1] if lines else '(empty)'}"


def _inline_figures(dpi: str | None) -> None:
    """In a Jupyter kernel: figures inline (also under MPLBACKEND=Agg), at ``dpi`` when given."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return
    shell.run_line_magic("matplotlib", "inline")
    if dpi:
        import matplotlib

        matplotlib.rcParams["figure.dpi"] = float(dpi)


def copy_link(name: str) -> str:
    """The line a source notebook's first cell ends with: where its executed copy is."""
    return (f"Executed copy, with the outputs of the last `bash run_all.sh`: "
            f"[docs/notebooks/{name}](../docs/notebooks/{name}).")


def source_link(name: str) -> str:
    """The line that replaces ``copy_link`` in the executed copy: where its source is."""
    return (f"This is the executed copy (outputs of the last `bash run_all.sh`); the source, "
            f"without outputs: [notebooks/{name}](../../notebooks/{name}).")


def publish_executed(executed: str | Path, out: str | Path, names: list[str],
                     root: str | Path = ".") -> list[tuple[Path, int]]:
    """Copy executed notebooks ``names`` to ``out``, links swapped, streams coalesced, paths relative."""
    prefix = f"{Path(root).resolve()}/"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        nb = json.loads((Path(executed) / f"{name}.ipynb").read_text())
        first = nb["cells"][0]
        text = "".join(first["source"]).replace(copy_link(f"{name}.ipynb"), source_link(f"{name}.ipynb"))
        first["source"] = text.splitlines(keepends=True)
        for cell in nb["cells"]:
            if cell.get("outputs"):
                cell["outputs"] = coalesce_streams(cell["outputs"])
        path = out / f"{name}.ipynb"
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False).replace(prefix, "") + "\n")
        written.append((path, path.stat().st_size))
    return written


def coalesce_streams(outputs: list[dict]) -> list[dict]:
    """A cell's outputs with each stream's runs joined, lines as their last carriage return left them."""
    merged: list[dict] = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1]["name"] == out["name"]):
            merged[-1] = {**merged[-1], "text": "".join(merged[-1]["text"]) + "".join(out["text"])}
        else:
            merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = REWRITTEN.sub("", "".join(out["text"])).splitlines(keepends=True)
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="publish executed notebooks (run_all.sh)")
    p.add_argument("executed", help="folder of the executed notebooks (runs/NAME/executed)")
    p.add_argument("out", help="where the copies go (docs/notebooks)")
    p.add_argument("names", nargs="+", help="notebook names without .ipynb")
    args = p.parse_args(argv)
    too_big = 0
    for path, size in publish_executed(args.executed, args.out, args.names):
        over = size >= MAX_COPY_BYTES
        too_big += over
        print(f"  {path}  {size / 1024:.0f} KiB" + ("  OVER 2 MiB: lower " + FIGURE_DPI_ENV if over else ""))
    return 1 if too_big else 0


if __name__ == "__main__":
    raise SystemExit(main())
