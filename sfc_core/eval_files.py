"""Typed readers of the evaluation files: ``cam_eval.json`` (eval-cams), ``seg_eval.json``
(eval-seg) and ``final_eval.json`` (segment), so a field's name is spelt once. Scores are
fractions in [0, 1], None where a class is absent from both ground truth and prediction. Each
file carries ``made_from``, the record of what it was computed from (``sfc_core.provenance``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfc_core.errors import SfcError


def read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """The JSON object in ``path``; SfcError naming ``what`` and ``fix`` when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SfcError(f"cannot read {what} ({type(e).__name__})", path=path, fix=fix) from None
    if not isinstance(data, dict):
        raise SfcError(f"{what} is not a JSON object", path=path, fix=fix)
    return data


def _field(key: str, doc: str | None = None) -> property:
    """A read-only property returning ``self.data[key]``."""
    return property(lambda self: self.data[key], doc=doc)


@dataclass(frozen=True)
class Calibration:
    """Over-/under-activation of one CAM kind: activation ratio, FP / FN shares, Spearman, head / tail."""

    activation_ratio: dict[str, float | None]
    fp_share: dict[str, float | None]
    fn_share: dict[str, float | None]
    spearman: float | None
    head_classes: list[str]
    head_mean_ratio: float | None
    tail_classes: list[str]
    tail_mean_ratio: float | None

    @classmethod
    def from_dict(cls, block: dict[str, Any]) -> Calibration:
        return cls(block["activation_ratio"], block["fp_share"], block["fn_share"],
                   block["spearman_ratio_vs_log_count"], block["head_classes"], block["head_mean_ratio"],
                   block["tail_classes"], block["tail_mean_ratio"])


@dataclass(frozen=True)
class EvaluationFile:
    """An evaluation file: its JSON ``data``, the list it scores and ``made_from``."""

    data: dict[str, Any]
    list_name = _field("list")
    num_images = _field("num_images")

    @property
    def made_from(self) -> dict[str, Any] | None:
        return self.data.get("made_from")


@dataclass(frozen=True)
class CamEval(EvaluationFile):
    """cam_eval.json: a row per CAM kind tuned on the evaluation list, and the authors' protocol."""

    classes = _field("classes", "Every class the rows score, background first.")
    image_counts = _field("image_counts", "Training images per foreground class (``image_counts_list``).")
    thresholds = _field("thresholds")
    lambdas = _field("lambdas")

    @property
    def kinds(self) -> list[str]:
        """The CAM kinds scored, in the order eval-cams wrote them."""
        return list(self.data["rows"])

    def row(self, kind: str) -> dict[str, Any]:
        """The row of ``kind`` tuned on the list it reports (threshold, lambda, miou, per class)."""
        return self.data["rows"][kind]

    def miou(self, kind: str) -> float | None:
        return self.row(kind)["miou"]

    def iou(self, kind: str) -> dict[str, float | None]:
        return self.row(kind)["iou"]

    def reference_miou(self, kind: str) -> float | None:
        """mIoU of ``kind`` under the reference's fixed background rule."""
        return self.row(kind)["reference_rule"]["miou"]

    def authors_protocol(self, kind: str) -> dict[str, Any]:
        """The row of ``kind`` under the authors' fixed rule: the one to compare with the paper."""
        return self.data["authors_protocol"]["rows"][kind]

    def authors_miou(self, kind: str) -> float | None:
        return self.authors_protocol(kind)["miou"]

    def setting(self, kind: str) -> dict[str, Any]:
        """What eval-cams chose for ``kind``, as ``cam_files.predict_mask``'s keyword arguments."""
        row = self.row(kind)
        return {"kind": kind, "lam": row["lambda"] or 0.0, "background": row["background"],
                "threshold": row["threshold"]}

    def chosen_lambda(self, kind: str) -> float | None:
        """The lambda chosen for ``kind`` (None for a kind without one)."""
        return self.row(kind)["lambda"]

    def chosen_threshold(self, kind: str) -> float:
        return self.row(kind)["threshold"]

    def calibration(self, kind: str) -> Calibration:
        return Calibration.from_dict(self.data["calibration"][kind])

    def sweep(self, rule: str = "threshold_rule") -> dict[str, Any]:
        """mIoU per variant: a list over ``thresholds`` (threshold rule) or one number (reference)."""
        return self.data["sweep"][rule]

    @property
    def heldout_list(self) -> str | None:
        """The held-out list's name (scored or not), None when the dataset has none."""
        held = self.data.get("heldout")
        return held["list"] if held else None

    @property
    def heldout(self) -> CamEval | None:
        """The same rows on the held-out list (at these settings), None when not scored."""
        held = self.data.get("heldout")
        return CamEval(held) if held and "rows" in held else None


@dataclass(frozen=True)
class SegEval(EvaluationFile):
    """seg_eval.json: pseudo-mask scores per refinement method."""

    @property
    def methods(self) -> list[str]:
        return list(self.data["methods"])

    def method(self, name: str) -> dict[str, Any]:
        """uncertain_pixels / scored_pixels / uncertain_share, the two score blocks, made_from."""
        return self.data["methods"][name]

    def scores(self, name: str, uncertain: str = "background") -> dict[str, Any]:
        """miou and per-class scores of ``name``'s masks, 255 counted as background or ignored."""
        if uncertain not in ("background", "ignored"):
            raise ValueError(f"uncertain must be 'background' or 'ignored', not {uncertain!r}")
        return self.method(name)["uncertain_as_background" if uncertain == "background" else "uncertain_ignored"]

    def miou(self, name: str, uncertain: str = "background") -> float | None:
        return self.scores(name, uncertain)["miou"]

    def uncertain_share(self, name: str) -> float | None:
        return self.method(name)["uncertain_share"]

    @property
    def fused_cam(self) -> dict[str, Any] | None:
        """The fused CAM's row at the settings cam_eval.json chose, for comparison."""
        return self.data.get("fused_cam")


@dataclass(frozen=True)
class FinalEval(EvaluationFile):
    """final_eval.json: the step-3 network on the held-out list."""

    masks = _field("masks")
    network = _field("network")
    steps = _field("steps")

    @property
    def kinds(self) -> list[str]:
        """The scored inference kinds: single_scale, multi_scale_flip (, multi_scale_flip_crf)."""
        return [kind for kind in ("single_scale", "multi_scale_flip", "multi_scale_flip_crf") if kind in self.data]

    def miou(self, kind: str = "multi_scale_flip") -> float | None:
        return self.data[kind]["miou"]

    def iou(self, kind: str = "multi_scale_flip") -> dict[str, float | None]:
        return self.data[kind]["iou"]


def read_cam_eval(path: Path) -> CamEval:
    return CamEval(read_json(path, "CAM evaluation", "run: python -m sfc_core eval-cams --run RUN_DIR"))


def read_seg_eval(path: Path) -> SegEval:
    return SegEval(read_json(path, "pseudo-mask evaluation", "run: python -m sfc_core eval-seg --run RUN_DIR"))


def read_final_eval(path: Path) -> FinalEval:
    return FinalEval(read_json(path, "step-3 evaluation",
                               "run: python -m sfc_core segment --run RUN_DIR --masks MASKS"))
