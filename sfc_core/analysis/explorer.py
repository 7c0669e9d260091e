"""The interactive CAM explorer (ipywidgets): saved CAMs under any kind, lambda and background rule.

Pick an image, a class, a CAM kind (a button per ``cam_files.CAM_KINDS``), lambda and the rule;
overlay, predicted mask, ground truth and IoU update from the saved CAM files. It opens at the
setting eval-cams chose; ``explorer_view`` is the pure function behind it.

    CamExplorer("runs/synthetic-paper/sfc")     # last line of a cell; screenshot: explorer_browser
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from sfc_core.analysis.plots import cam_overlays, mask_to_rgb
from sfc_core.cam_files import CAM_KINDS, CamRecord, load_cam, predict_mask
from sfc_core.config import Config
from sfc_core.data import open_dataset
from sfc_core.errors import SfcError
from sfc_core.eval_files import read_cam_eval
from sfc_core.method.fusion import BACKGROUND_RULES
from sfc_core.metrics import confusion_matrix, iou_from_confusion, mean_iou, percent
from sfc_core.run_dir import RunDir

SLIDER_STEP = 0.05    # lambda and threshold sliders


@dataclass
class ExplorerView:
    overlay: np.ndarray      # (H, W, 3) uint8: the class's CAM over the image
    prediction: np.ndarray   # (H, W) uint8 class indices 0..C
    truth: np.ndarray        # (H, W) uint8 class indices 0..C, 255 ignore
    image_miou: float        # mIoU over the classes in the truth or the prediction
    class_iou: float         # IoU of the chosen class


@dataclass(frozen=True)
class Setting:
    """Where the explorer's controls stand, and the line that says where that setting comes from."""

    kind: str
    lam: float
    background: str
    threshold: float
    caption: str


def chosen_setting(run: RunDir, cfg: Config, kind: str = "fused") -> Setting:
    """The setting eval-cams chose for ``kind`` and its mIoU; the config's without cam_eval.json."""
    if not run.cam_eval_json.is_file():
        return Setting(kind, cfg.cams.fusion_lambda, cfg.cams.background, cfg.cams.bg_threshold,
                       f"the configuration's setting: this run has no cam_eval.json yet "
                       f"(python -m sfc_core eval-cams --run {run.root})")
    cam_eval = read_cam_eval(run.cam_eval_json)
    s = cam_eval.setting(kind)
    lam = f", lambda {s['lam']:g}" if CAM_KINDS[kind].swept else ""
    return Setting(kind, s["lam"], s["background"], s["threshold"],
                   f"chosen by eval-cams on list {cam_eval.list_name}: {kind} CAM{lam}, background "
                   f"threshold {s['threshold']:g} (mIoU {percent(cam_eval.miou(kind))} on {cam_eval.list_name})")


def reference_setting(run: RunDir, cfg: Config, kind: str = "fused") -> Setting:
    """The reference's rule at the config's lambda, its mIoU from cam_eval.json when there is one."""
    chosen = chosen_setting(run, cfg, kind)
    score = ""
    if run.cam_eval_json.is_file():
        cam_eval = read_cam_eval(run.cam_eval_json)
        score = f" (mIoU {percent(cam_eval.reference_miou(kind))} on {cam_eval.list_name})"
    lam = f", lambda {cfg.cams.fusion_lambda:g}" if CAM_KINDS[kind].swept else ""
    return Setting(kind, cfg.cams.fusion_lambda, "reference", chosen.threshold,
                   f"the reference rule: {kind} CAM{lam}, background + 0.4 against 2 x foreground{score}")


def explorer_view(image: np.ndarray, truth: np.ndarray, record: CamRecord, class_index: int,
                  kind: str, lam: float, background: str, threshold: float) -> ExplorerView:
    """One explorer frame: image (H, W, 3) uint8, truth (H, W) uint8, class_index one of ``record.keys``."""
    keys = [int(k) for k in record.keys]
    if class_index not in keys[1:]:
        raise SfcError(f"class {class_index} has no CAM in this record (classes {keys[1:]})",
                       fix="pick one of the image's labelled classes")
    prediction = predict_mask(record, kind, lam, background, threshold)
    conf = confusion_matrix(prediction, truth, record.num_classes + 1)
    overlay = cam_overlays(image, record, class_index, [(kind, lam)])[0]
    return ExplorerView(overlay=overlay, prediction=prediction, truth=truth,
                        image_miou=mean_iou(conf), class_iou=float(iou_from_confusion(conf)[class_index]))


def colour_scale(width: int, height: int = 10) -> np.ndarray:
    """The overlays' colour scale: (height, width, 3) uint8, CAM value 0 (left) to 1 (right), jet."""
    from matplotlib import colormaps

    ramp = colormaps["jet"](np.linspace(0.0, 1.0, width))[:, :3]
    return np.broadcast_to(np.round(255 * ramp).astype(np.uint8), (height, width, 3)).copy()


def png_bytes(array: np.ndarray, width: int) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes, scaled (nearest) to ``width`` pixels wide."""
    image = Image.fromarray(array)
    height = max(1, round(image.height * width / image.width))
    buf = io.BytesIO()
    image.resize((width, height), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


class CamExplorer:
    """The widget (``self.widget``) on ``list_name``'s CAMs; its controls are attributes code can move."""

    def __init__(self, run: str | Path | RunDir, list_name: str | None = None, width: int = 256,
                 kind: str = "fused"):
        import ipywidgets as w

        self.run = RunDir(run)
        cfg = self.run.load_config()
        self.dataset = open_dataset(cfg.data)
        self.class_names = self.run.class_names()
        list_name = list_name or cfg.data.eval_list
        self.ids = [i for i in self.dataset.ids(list_name) if self.run.cam_file(i).is_file()]
        if not self.ids:
            raise SfcError(f"no CAMs for the images of list {list_name!r}", path=self.run.cams,
                           fix=f"make them first: python -m sfc_core cams --run {self.run.root}")
        self.width = width
        self._record = lru_cache(maxsize=64)(
            lambda image_id: load_cam(self.run, image_id, num_classes=len(self.class_names)))

        self.settings = {"chosen": chosen_setting(self.run, cfg, kind),
                         "reference": reference_setting(self.run, cfg, kind)}
        start = self.settings["chosen"]
        self.image = w.Dropdown(options=self.ids, description="image").add_class("sfc-explorer-image-id")
        self.cls = w.Dropdown(description="class").add_class("sfc-explorer-class")
        self.kind = w.ToggleButtons(options=list(CAM_KINDS), value=start.kind, description="CAM").add_class("sfc-explorer-kind")
        self.lam = w.FloatSlider(value=start.lam, min=0.0, max=1.0, step=SLIDER_STEP,
                                 description="lambda").add_class("sfc-explorer-lambda")
        self.background = w.ToggleButtons(options=BACKGROUND_RULES, value=start.background,
                                          description="background").add_class("sfc-explorer-background")
        self.threshold = w.FloatSlider(value=start.threshold, min=0.0, max=0.95, step=SLIDER_STEP,
                                       description="threshold").add_class("sfc-explorer-threshold")
        self.chosen_button = w.Button(description="chosen setting").add_class("sfc-explorer-chosen")
        self.reference_button = w.Button(description="reference rule").add_class("sfc-explorer-reference")
        self.setting_line = w.HTML().add_class("sfc-explorer-setting")
        self._setting = start          # the setting the controls were last moved to
        self.overlay_image = w.Image(format="png").add_class("sfc-explorer-overlay")
        self.prediction_image = w.Image(format="png").add_class("sfc-explorer-prediction")
        self.truth_image = w.Image(format="png").add_class("sfc-explorer-truth")
        self.score = w.HTML().add_class("sfc-explorer-iou")

        def captioned(caption: str, image: w.Image, *under: w.Widget) -> w.VBox:
            return w.VBox([w.HTML(f"<b>{caption}</b>"), image, *under])

        scale = w.VBox([w.Image(value=png_bytes(colour_scale(width), width), format="png"),
                        w.HTML("CAM value: 0 (blue) to 1 (red), clipped")]).add_class("sfc-explorer-colour-scale")

        self.widget = w.VBox([
            w.HBox([self.image, self.cls]), w.HBox([self.chosen_button, self.reference_button]),
            self.setting_line, self.kind, self.lam, self.background, self.threshold,
            w.HBox([captioned("CAM overlay", self.overlay_image, scale),
                    captioned("predicted mask", self.prediction_image),
                    captioned("ground truth", self.truth_image)]),
            self.score,
        ]).add_class("sfc-explorer")

        self.image.observe(self._on_image, "value")
        for control in (self.cls, self.kind, self.lam, self.background, self.threshold):
            control.observe(self._redraw, "value")
        self.chosen_button.on_click(lambda _: self.apply(self.settings["chosen"]))
        self.reference_button.on_click(lambda _: self.apply(self.settings["reference"]))
        self._on_image()

    def apply(self, setting: Setting) -> None:
        """Move every control to ``setting`` (one redraw) and say which setting it is."""
        controls = (self.kind, self.lam, self.background, self.threshold)
        for control in controls:
            control.unobserve(self._redraw, "value")
        self.kind.value, self.lam.value = setting.kind, setting.lam
        self.background.value, self.threshold.value = setting.background, setting.threshold
        for control in controls:
            control.observe(self._redraw, "value")
        self._setting = setting
        self._redraw()

    def _at(self, setting: Setting) -> bool:
        """Whether the controls stand at ``setting`` (a slider rounded to its step still counts)."""
        return (self.kind.value, self.background.value) == (setting.kind, setting.background) and \
            abs(self.lam.value - setting.lam) < 1e-6 and abs(self.threshold.value - setting.threshold) < 1e-6

    def _on_image(self, change: dict | None = None) -> None:
        keys = [int(k) for k in self._record(self.image.value).keys[1:]]
        options = [(self.class_names[k - 1], k) for k in keys]
        self.cls.unobserve(self._redraw, "value")     # one redraw below, not one per trait change
        self.cls.options = options
        self.cls.value = options[0][1] if options else None
        self.cls.observe(self._redraw, "value")
        self._redraw()

    def _redraw(self, change: dict | None = None) -> None:
        self.setting_line.value = f"setting: {self._setting.caption}" if self._at(self._setting) else (
            "setting: your own (the buttons above go back to the chosen setting or the reference rule)")
        self.lam.disabled = not CAM_KINDS[self.kind.value].swept
        self.threshold.disabled = self.background.value != "threshold"
        if self.cls.value is None:
            self.score.value = "this image has no labelled class"
            return
        image_id = self.image.value
        view = explorer_view(self.dataset.read_image(image_id), self.dataset.read_mask(image_id),
                             self._record(image_id), self.cls.value, self.kind.value, self.lam.value,
                             self.background.value, self.threshold.value)
        self.overlay_image.value = png_bytes(view.overlay, self.width)
        self.prediction_image.value = png_bytes(mask_to_rgb(view.prediction), self.width)
        self.truth_image.value = png_bytes(mask_to_rgb(view.truth), self.width)
        name = self.class_names[self.cls.value - 1]
        self.score.value = (f"image {image_id}: mIoU <b>{percent(view.image_miou)}</b> &nbsp; "
                            f"IoU of {name} <b>{percent(view.class_iou)}</b>")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
