"""The run directory: the one module that spells the file names inside a run. Stages hand work
on through these paths (no stage imports another). A run holds ``.lock`` (``run_lock``),
config.json, class_names.json, checkpoints/{last,best}.pt, metrics.jsonl, tb/, cams/<id>.npz
(``cam_files``), cam_eval.json, refine/irn/, pseudo/<method>/SegmentationClassPseudo/<id>.png and
pseudo/<method>/<list>.txt, seg_eval.json, and segment/<masks>/ laid out like a run (plus
final_eval.json, predictions/). Every output folder holds its provenance.json (``provenance``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sfc_core.config import Config
from sfc_core.errors import SfcError


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | Path | RunDir):
        object.__setattr__(self, "root", Path(root.root if isinstance(root, RunDir) else root))

    @property
    def lock_file(self) -> Path:
        """Held by the stage writing into this folder; names it (``sfc_core.run_lock``)."""
        return self.root / ".lock"

    # -- configuration ----------------------------------------------------------------------
    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def class_names_json(self) -> Path:
        return self.root / "class_names.json"

    def load_config(self, overrides: dict | None = None) -> Config:
        """config.json, with ``overrides`` (dotted keys, e.g. a verb's --set) on top."""
        if not self.config_json.is_file():
            raise SfcError(f"{self.root} is not a run directory (no config.json)",
                           path=self.config_json,
                           fix="train first: python -m sfc_core train --preset NAME --out RUN_DIR")
        return Config.load(self.config_json).override(overrides or {})

    def class_names(self) -> list[str]:
        if not self.class_names_json.is_file():
            raise SfcError("run directory has no class list", path=self.class_names_json,
                           fix="train first: python -m sfc_core train --out RUN_DIR")
        return json.loads(self.class_names_json.read_text())

    # -- training ---------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def inference_checkpoint(self) -> Path:
        """The checkpoint later stages use: best.pt, else last.pt (a run without validation)."""
        return self.best_checkpoint if self.best_checkpoint.is_file() else self.last_checkpoint

    @property
    def metrics_jsonl(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    # -- CAMs and their evaluation ----------------------------------------------------------
    @property
    def cams(self) -> Path:
        return self.root / "cams"

    def cam_file(self, image_id: str) -> Path:
        return self.cams / f"{image_id}.npz"

    @property
    def cam_eval_json(self) -> Path:
        return self.root / "cam_eval.json"

    # -- pseudo masks (step 2) --------------------------------------------------------------
    def refine_dir(self, method: str) -> Path:
        return self.root / "refine" / method

    @property
    def relation_labels(self) -> Path:
        """IRN's relation labels ``<id>.png`` (palette; 0 bg, 1..C, 255 uncertain)."""
        return self.refine_dir("irn") / "relation_labels"

    @property
    def irn_checkpoint(self) -> Path:
        return self.refine_dir("irn") / "checkpoint.pt"

    @property
    def irn_metrics_jsonl(self) -> Path:
        return self.refine_dir("irn") / "metrics.jsonl"

    def pseudo_masks(self, method: str) -> Path:
        """Folder of palette PNGs ``<id>.png`` in the VOC layout (DeepLab trainers read it)."""
        return self.root / "pseudo" / method / "SegmentationClassPseudo"

    def pseudo_methods(self) -> list[str]:
        """Refinement methods that have a pseudo-mask folder in this run, sorted."""
        root = self.root / "pseudo"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if self.pseudo_masks(p.name).is_dir())

    def pseudo_list(self, method: str, list_name: str) -> Path:
        return self.root / "pseudo" / method / f"{list_name}.txt"

    @property
    def seg_eval_json(self) -> Path:
        return self.root / "seg_eval.json"

    # -- step 3 -----------------------------------------------------------------------------
    def segment_dir(self, masks: str) -> Path:
        return self.root / "segment" / masks

    def final_eval_json(self, masks: str) -> Path:
        return self.segment_dir(masks) / "final_eval.json"

    def segment_predictions(self, masks: str) -> Path:
        """Folder of palette PNGs ``<id>.png``: the step-3 network's held-out predictions."""
        return self.segment_dir(masks) / "predictions"


def check_files(paths: dict[str, Path], what: str, list_name: str, fix: str) -> None:
    """SfcError naming how many and which of a list's files are missing (never a silent subset)."""
    missing = [image_id for image_id, path in paths.items() if not path.is_file()]
    if missing:
        first = next(iter(paths.values())).parent
        raise SfcError(f"{len(missing)} of {len(paths)} images of list {list_name!r} have no {what}, "
                       f"first: {', '.join(missing[:5])}", path=first, fix=fix)


def check_cams(run: RunDir, ids: list[str], list_name: str) -> None:
    check_files({i: run.cam_file(i) for i in ids}, "CAM file", list_name,
                fix=f"run: python -m sfc_core cams --run {run.root} --list {list_name}")
