"""The set-up every notebook runs first, from its papermill parameters."""
from __future__ import annotations

import os
from pathlib import Path

from sfc_core.config import Config


def setup(preset: str, data_root: str, run_root: str, figures_dir: str,
          smoke: bool) -> tuple[Config, Path, Path]:
    """(config, run root, figures folder) of a notebook's parameters, printed in one line.

    Opened in Jupyter the notebook's working directory is ``notebooks/``: it moves to the
    repository root so the default paths (``runs/``, ``figures/``, ``data/``) mean the same as
    under run_all.sh. ``smoke`` picks the tiny ``synthetic-smoke`` preset; ``data_root``, when
    given, replaces the preset's dataset root.
    """
    if Path.cwd().name == "notebooks":
        os.chdir("..")
    cfg = Config.from_preset("synthetic-smoke" if smoke else preset, {"data.root": data_root} if data_root else {})
    print(f"preset {cfg.preset}, dataset {cfg.data.dataset} at {cfg.data.root or '(none given)'}, runs in {run_root}")
    return cfg, Path(run_root), Path(figures_dir)
