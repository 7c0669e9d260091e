"""The CAM explorer in a real browser: JupyterLab in headless Chromium runs notebook
04_visualization on a run, and the explorer it shows can be driven and photographed.

    python -m sfc_core.analysis.explorer_browser --run runs/synthetic-paper/sfc --out figures/explorer_screenshot.png

writes the explorer as it opens, at the setting eval-cams chose (cam_eval.json). It needs
Debian's ``chromium`` (run_tests.sh installs it on CI) and ``playwright`` (pinned in
pyproject.toml). tests/test_explorer_browser.py drives the same page (``explorer_page``).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sfc_core.errors import SfcError
from sfc_core.run_dir import RunDir

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "04_visualization.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1100}


def chromium() -> str | None:
    """The path of Debian's chromium, None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@contextmanager
def jupyter_lab(root: Path, home: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on 127.0.0.1 serving ``root`` (settings under ``home``); yields (url, token)."""
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


@contextmanager
def explorer_page(run: RunDir, workdir: Path) -> Iterator[object]:
    """A playwright page of JupyterLab that ran notebook 04 on ``run`` (figures into ``workdir``)."""
    import papermill
    from playwright import sync_api

    browser_path = chromium()
    if browser_path is None:
        raise SfcError("Debian's chromium is not installed", fix="apt-get install -y chromium")
    if run.root.name != "sfc":
        raise SfcError(f"notebook 04's explorer shows the run sfc/ of its run root, not {run.root.name}/",
                       path=run.root, fix="give the run directory named sfc (e.g. runs/synthetic-paper/sfc)")
    cfg = run.load_config()
    served = workdir / "served"
    served.mkdir(parents=True)
    papermill.execute_notebook(
        str(NOTEBOOK), str(served / NOTEBOOK.name), prepare_only=True, kernel_name="python3",
        parameters={"preset": cfg.preset, "smoke": False, "run_root": str(Path(run.root).resolve().parent),
                    "data_root": cfg.data.root, "figures_dir": str(workdir / "figures")})
    with jupyter_lab(served, workdir / "jupyter") as (base, token), sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(workdir / "chromium-profile"), executable_path=browser_path, headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT)
        try:
            page = browser.new_page()
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            _wait_for_idle_kernel(base, token)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.locator(".sfc-explorer-overlay").wait_for(state="visible", timeout=300_000)
            page.wait_for_function(
                "document.querySelector('.sfc-explorer-overlay').naturalWidth > 0", timeout=60_000)
            yield page
        finally:
            browser.close()


def screenshot(run: str | Path | RunDir, out: str | Path) -> Path:
    """Write the screenshot of the explorer on ``run``, as it opens (at the chosen setting), to ``out``."""
    run, out = RunDir(run), Path(out)
    with tempfile.TemporaryDirectory(prefix="sfc-explorer-") as scratch, \
            explorer_page(run, Path(scratch)) as page:
        page.locator(".sfc-explorer").scroll_into_view_if_needed()
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        print(page.locator(".sfc-explorer-setting").inner_text())
    print(f"explorer screenshot -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sfc_core.analysis.explorer_browser",
                                description="Screenshot of the CAM explorer (notebook 04 in JupyterLab, "
                                            "headless Chromium) at the setting eval-cams chose.")
    p.add_argument("--run", required=True, help="a run directory with cams/ and cam_eval.json")
    p.add_argument("--out", default="figures/explorer_screenshot.png", help="the PNG to write")
    args = p.parse_args(argv)
    screenshot(args.run, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
