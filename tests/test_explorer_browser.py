"""The CAM explorer, for real: JupyterLab in headless Chromium runs the visualisation notebook,
a slider moves, and the overlay the browser shows changes.

Also the explorer's pure frame function and its widget, without a browser.

The browser test needs Debian's `chromium` (run_tests.sh installs it on CI) and the
`playwright` Python package pointed at it; it skips with the reason when either is missing.
It uses the smoke run of tests/conftest.py (`cam_run`); set SFC_EXPLORER_RUN_ROOT to a
folder holding a run `sfc/` with CAMs to drive the explorer on that run instead, and
SFC_SCREENSHOT_DIR to keep the screenshot (default: the test's temp dir).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "04_visualization.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# -- the frame function and the widget, no browser ---------------------------------------------


def _record(classifier: np.ndarray, prototype: np.ndarray, keys: list[int], num_classes: int):
    from sfc_core.cam_file import CamRecord

    return CamRecord("x", np.asarray(keys, dtype=np.int64), classifier.astype(np.float32),
                     prototype.astype(np.float32), num_classes)


def test_explorer_view_matches_a_hand_computed_frame():
    from sfc_core.analysis.explorer import explorer_view

    # 1 x 4 image, classes {2}; classifier says class 2 on the left half, prototype everywhere.
    classifier = np.array([[[0.1, 0.1, 0.9, 0.9]], [[1.0, 0.8, 0.0, 0.0]]])
    prototype = np.array([[[0.0, 0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0, 0.6]]])
    record = _record(classifier, prototype, [0, 2], num_classes=3)
    image = np.full((1, 4, 3), 100, dtype=np.uint8)
    truth = np.array([[2, 2, 2, 0]], dtype=np.uint8)

    view = explorer_view(image, truth, record, 2, "classifier", 0.0, "threshold", 0.5)
    assert view.prediction.tolist() == [[2, 2, 0, 0]]
    # class 2: TP 2, GT 3, pred 2 -> 2/3; background: TP 1, GT 1, pred 2 -> 1/2
    assert view.class_iou == pytest.approx(2 / 3)
    assert view.image_miou == pytest.approx((2 / 3 + 1 / 2) / 2)

    # fused with lambda 1: (c + p) / 2 = [1.0, 0.9, 0.5, 0.3] -> the third pixel ties at 0.5
    # and ties go to the background; at threshold 0.25 the fourth joins too
    fused = explorer_view(image, truth, record, 2, "fused", 1.0, "threshold", 0.25)
    assert fused.prediction.tolist() == [[2, 2, 2, 2]]
    assert fused.class_iou == pytest.approx(3 / 4)
    # the overlay is the class's fused CAM through the jet colour map: hotter on the left
    red = fused.overlay[0, :, 0].astype(int)
    assert red[0] > red[3]
    assert not np.array_equal(fused.overlay, view.overlay)


def test_explorer_view_rejects_a_class_without_a_cam():
    from sfc_core.analysis.explorer import explorer_view
    from sfc_core.errors import SfcError

    record = _record(np.ones((2, 2, 2)), np.ones((2, 2, 2)), [0, 1], num_classes=2)
    with pytest.raises(SfcError, match="class 2 has no CAM"):
        explorer_view(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8), record,
                      2, "fused", 0.3, "reference", 0.25)


@pytest.mark.slow
def test_explorer_widget_redraws_when_a_control_moves(cam_run):
    from sfc_core.analysis.explorer import CamExplorer

    explorer = CamExplorer(cam_run)
    assert explorer.ids and explorer.overlay_image.value and explorer.cls.options
    before = (explorer.overlay_image.value, explorer.prediction_image.value)
    explorer.kind.value = "prototype"
    explorer.background.value = "threshold"
    explorer.threshold.value = 0.0 if explorer.threshold.value > 0.4 else 0.9
    assert (explorer.overlay_image.value, explorer.prediction_image.value) != before
    assert explorer.lam.disabled and not explorer.threshold.disabled
    if len(explorer.ids) > 1:
        explorer.image.value = explorer.ids[1]
        keys = [int(k) for k in explorer._record(explorer.ids[1]).keys[1:]]
        assert [value for _, value in explorer.cls.options] == keys


# -- the browser round trip --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@contextmanager
def jupyter_lab(root: Path, home: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on 127.0.0.1 serving ``root``; yields (base url, token).

    Its configuration, settings and workspaces live under ``home`` (so no saved layout or
    news prompt gets in the way); it is stopped through its own process, which is the
    port's listener (started without a shell).
    """
    config = home / "config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), IPYTHONDIR=str(home / "ipython"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    port, token = _free_port(), secrets.token_hex(16)
    log = open(home / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get_json(f"{base}/api/status?token={token}")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: {(home / 'server.log').read_text()}") from None
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _wait_for_idle_kernel(base: str, token: str, timeout: float = 180) -> None:
    """The toolbar says idle before the kernel exists: ask the server until a kernel is idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sessions = _get_json(f"{base}/api/sessions?token={token}")
        if sessions and all(s["kernel"]["execution_state"] == "idle" for s in sessions):
            return
        time.sleep(0.5)
    raise TimeoutError(f"no idle kernel after {timeout} s: {sessions}")


def _explorer_run(request):
    """The run the explorer shows (``sfc/`` of SFC_EXPLORER_RUN_ROOT, else the smoke run)."""
    from sfc_core.run_dir import RunDir

    given = os.environ.get("SFC_EXPLORER_RUN_ROOT")
    return RunDir(Path(given) / "sfc") if given else request.getfixturevalue("cam_run")


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                    "(apt-get install -y chromium; run_tests.sh does it on CI)")
def test_explorer_in_jupyterlab_redraws_the_overlay_when_the_slider_moves(request, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
    import papermill

    from sfc_core.analysis.explorer import SLIDER_STEP

    run = _explorer_run(request)
    cfg = run.load_config()
    presses = 8
    expected_lambda = min(1.0, cfg.cams.fusion_lambda + presses * SLIDER_STEP)
    shots = Path(os.environ.get("SFC_SCREENSHOT_DIR", tmp_path / "figures"))
    shots.mkdir(parents=True, exist_ok=True)
    served = tmp_path / "served"
    served.mkdir()
    papermill.execute_notebook(
        str(NOTEBOOK), str(served / NOTEBOOK.name), prepare_only=True, kernel_name="python3",
        parameters={"run_root": str(run.root.parent), "data_root": cfg.data.root,
                    "figures_dir": str(tmp_path / "figures"), "smoke": True})

    with jupyter_lab(served, tmp_path / "jupyter") as (base, token), sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1100})
        try:
            page = browser.new_page()
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            _wait_for_idle_kernel(base, token)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            overlay = page.locator(".sfc-explorer-overlay")
            overlay.wait_for(state="visible", timeout=300_000)
            page.wait_for_function(
                "document.querySelector('.sfc-explorer-overlay').naturalWidth > 0", timeout=60_000)
            overlay.scroll_into_view_if_needed()
            before = overlay.screenshot()
            score_before = page.locator(".sfc-explorer-iou").inner_text()

            # move the fusion-lambda slider with the keyboard, as a user would
            page.locator(".sfc-explorer-lambda .noUi-handle").focus()
            for _ in range(presses):
                page.keyboard.press("ArrowRight")
            deadline = time.monotonic() + 60
            after = overlay.screenshot()
            while after == before and time.monotonic() < deadline:
                page.wait_for_timeout(500)
                after = overlay.screenshot()
            readout = page.locator(".sfc-explorer-lambda .widget-readout").inner_text()
            page.locator(".sfc-explorer").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "explorer_screenshot.png"))
        finally:
            browser.close()

    assert float(readout) == pytest.approx(expected_lambda), f"the slider did not move (readout {readout})"
    assert after != before, "the overlay did not change after the lambda slider moved"
    assert score_before.startswith("image ")
    assert (shots / "explorer_screenshot.png").stat().st_size > 10_000
