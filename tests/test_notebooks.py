"""The notebooks run top to bottom headlessly (papermill, smoke size, in order, one shared run
root and figures folder in a temp dir), and the plotting helpers they call compute what they say.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from sfc_core.analysis import plots
from sfc_core.analysis.notebook import failure_message, setup
from sfc_core.masks import cam_overlay

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PARAMETERS = ("preset", "data_root", "run_root", "figures_dir", "smoke", "full", "force", "config_file", "overrides")

# What each notebook must leave in the figures folder.
EXPECTED_FIGURES = {
    "00_data": ["00_examples.png", "00_pretraining_set.png", "00_pretrained_features.png"],
    "01_long_tail_analysis": ["01_class_counts.png", "01_cooccurrence.png", "01_distribution_coefficients.png",
                              "01_activation_ratio.png", "01_class_stats.csv", "01_symptom.json",
                              "01_shared_part_recall.png", "01_lost_to_other_class.png", "01_mechanism.json",
                              "01_mechanism_targets.json"],
    "02_train": ["02_training_batch.png", "02_step_terms.json", "02_loss_curves.png"],
    "03_cam_fusion": ["03_walkthrough.png", "03_cam_table.csv", "03_cam_table.json", "03_threshold_sweep.png", "03_lambda_sweep.png",
                      "03_iou_vs_frequency.png", "03_activation_ratio.png", "03_cam_kinds.png"],
    "04_visualization": ["04_head_tail_overlays.png"],
    "05_evaluation": ["05_results.json", "05_results_per_seed.csv", "05_fix_targets.json", "05_ablations.json",
                      "05_pseudo_masks.json", "05_step3.json", "05_published.json",
                      "05_paper_comparison.json"],
}


# -- the notebooks as files --------------------------------------------------------------------


def test_the_notebooks_are_the_six_of_the_pipeline():
    assert [p.stem for p in NOTEBOOKS] == list(EXPECTED_FIGURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_parameters_cell_and_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines()
             if "=" in line and not line.startswith("#")}
    assert set(PARAMETERS) <= names
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"


# -- the notebooks, executed -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(smoke_config, tmp_path_factory) -> dict[str, Path]:
    """One run root and figures folder for all notebooks; the session's smoke dataset."""
    root = tmp_path_factory.mktemp("notebooks")
    return {"data_root": Path(smoke_config.data.root), "run_root": root / "runs",
            "figures_dir": root / "figures", "executed": root / "executed"}


def _committed_figures() -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (REPO / "figures").glob("*")}


def _outputs_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.extend(str(v) for v in output.get("data", {}).values())
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headlessly_at_smoke_size(path, shared):
    import papermill

    before = _committed_figures()
    out = shared["executed"] / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(path), str(out), cwd=str(REPO), kernel_name="python3", progress_bar=False,
        parameters={"smoke": True, "data_root": str(shared["data_root"]),
                    "run_root": str(shared["run_root"]), "figures_dir": str(shared["figures_dir"]),
                    # 01's no-shared-part control trains only with full=True: tested here, once
                    "full": path.stem == "01_long_tail_analysis"})
    for name in EXPECTED_FIGURES[path.stem]:
        file = shared["figures_dir"] / name
        assert file.is_file() and file.stat().st_size > 0, f"{path.stem} did not write {name}"
    assert _committed_figures() == before, "the smoke run wrote into the committed figures/"
    _check_contents(path.stem, shared, _outputs_text(out))


def _check_contents(stem: str, shared: dict[str, Path], text: str) -> None:
    """Spot checks of what a notebook wrote, against values computed here independently."""
    figures, runs = shared["figures_dir"], shared["run_root"]
    if stem == "01_long_tail_analysis":
        # image counts per class straight from the generator's label file and training list
        root = shared["data_root"] / "smoke-seed0"
        names = (root / "class_names.txt").read_text().split()
        labels = json.loads((root / "cls_labels.json").read_text())
        ids = (root / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
        expected = {name: sum(k in labels[i] for i in ids) for k, name in enumerate(names)}
        table = json.loads((figures / "01_class_stats.json").read_text())
        assert {row["class"]: row["images"] for row in table} == expected
        assert [row["images"] for row in table] == sorted(expected.values(), reverse=True)
        assert (runs / "baseline-control" / "cam_eval.json").is_file()
        assert not (runs / "sfc").exists(), "01 trains the baselines only: SFC trains in 02"
        assert "targets" in text
        rows = json.loads((figures / "01_mechanism_targets.json").read_text())
        assert sum(row["scope"] == "baseline vs control" for row in rows) == 2
        # the symptom's magnitude: the log-log slope, refitted here from cam_eval.json
        symptom = json.loads((figures / "01_symptom.json").read_text())
        for scope in ("baseline", "baseline-control"):
            cam_eval = json.loads((runs / scope / "cam_eval.json").read_text())
            names = cam_eval["classes"][1:]
            ratio = np.array([cam_eval["calibration"]["classifier"]["activation_ratio"][n] for n in names], dtype=float)
            count = np.array([cam_eval["image_counts"][n] for n in names], dtype=float)
            keep = np.isfinite(ratio) & (ratio > 0)
            slope = np.polyfit(np.log(count[keep]), np.log(ratio[keep]), 1)[0] if keep.sum() >= 2 else None
            row = next(r for r in symptom if r["scope"] == scope and r["figure"].startswith("slope of log"))
            assert row["measured"] == (None if slope is None else pytest.approx(slope))
            assert any(r["scope"] == scope and r["figure"].startswith("Spearman") for r in symptom)
    if stem == "02_train":
        # the step taken apart: its terms add up to the losses, the step lowers the batch's loss
        terms = json.loads((figures / "02_step_terms.json").read_text())
        assert terms[0]["class"] == "background" and terms[-1]["class"] == "total (the loss)"
        for column in ("w_k x prototype term", "w_k x scale term"):
            assert sum(r[column] for r in terms[:-1]) == pytest.approx(terms[-1][column], rel=1e-4)
        before, after = map(float, re.search(r"total loss of this batch: (\S+) before the step, (\S+) after", text).groups())
        assert after < before
        # SFC trained in this kernel (its progress bar is in the outputs) to the end, by the train stage
        assert "train sfc" in text
        metrics = [json.loads(line) for line in (runs / "sfc" / "metrics.jsonl").read_text().splitlines()]
        assert f"sfc: {metrics[-1]['step']} steps" in text
        assert any(json.loads(line)["stage"] == "train" for line in (runs / "sfc" / "stage_times.jsonl").read_text().splitlines())
        # figures shown inline (not lost to Agg): batch, scales, the live loss plot, the curves
        assert text.count("iVBOR") >= 4, "02's figures are missing from its outputs"
    if stem == "03_cam_fusion":
        # the walk-through's two images and its figures shown inline
        assert "head: class" in text and "tail: class" in text
        assert text.count("iVBOR") >= 10, "03's figures are missing from its outputs"
        table = json.loads((figures / "03_cam_table.json").read_text())
        for row in table:
            cam_eval = json.loads((runs / row["run"] / "cam_eval.json").read_text())
            assert row["mIoU % (train, tuned on it)"] == pytest.approx(100 * cam_eval["rows"][row["CAM"]]["miou"])
        assert all("ratio slope on log count" in row for row in table)
        assert {(r["run"], r["CAM"]) for r in table} == {(run, kind) for run in ("baseline", "sfc")
                                                         for kind in ("classifier", "prototype", "fused")}
    if stem == "05_evaluation":
        published = json.loads((figures / "05_published.json").read_text())
        assert {"source": "SFC (AAAI 2024), published", "what": "CAM seeds (fused CAM)",
                "split": "VOC train", "mIoU %": 64.7} in published
        comparison = json.loads((figures / "05_paper_comparison.json").read_text())
        authors = json.loads((runs / "sfc" / "cam_eval.json").read_text())["authors_protocol"]["rows"]
        assert [row["this kit, mIoU % (train)"] for row in comparison[:2]] == \
            [pytest.approx(100 * authors[kind]["miou"]) for kind in ("prototype", "fused")]
        assert [row["compare with"][-4:] for row in comparison] == ["63.1", "64.7", "tic)"]
        results = json.loads((figures / "05_results.json").read_text())
        assert [row["variant"] for row in results] == ["baseline", "sfc"]
        assert ("targets met" in text) or ("targets missed" in text)
        step3 = json.loads((figures / "05_step3.json").read_text())
        assert [row["trained on"] for row in step3] == ["baseline masks", "sfc masks"]   # + ground truth: full


# -- the plotting helpers --------------------------------------------------------------------


def test_setup_moves_from_notebooks_to_the_repository_root_and_builds_the_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    cfg, run_root, figures_dir = setup("voc", "", "runs/x", "figs", smoke=True)
    assert Path.cwd() == tmp_path
    assert cfg.preset == "synthetic-smoke" and (run_root, figures_dir) == (Path("runs/x"), Path("figs"))
    assert "preset synthetic-smoke" in capsys.readouterr().out
    cfg, _, _ = setup("voc", str(tmp_path / "VOC"), "runs", "figures", smoke=False)
    assert Path.cwd() == tmp_path                                   # not a notebooks folder: stays
    assert (cfg.preset, cfg.data.root) == ("voc", str(tmp_path / "VOC"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_share_the_setup_call(path):
    code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert ("cfg, run_root, figures_dir = setup(preset, data_root, run_root, figures_dir, smoke, config_file, "
            "overrides)") in code[1]
    assert not any("os.chdir" in source or "Config.from_preset" in source for source in code)


def test_setup_applies_the_config_file_then_the_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "paper.txt"
    config.write_text("train.lr=0.05\nmodel.backbone_weights=/from/the/file.pth\n")
    cfg, _, _ = setup("voc", str(tmp_path), "runs", "figures", smoke=False, config_file=str(config),
                      overrides=["model.backbone_weights=/w/resnet50-0676ba61.pth"])
    assert (cfg.train.lr, cfg.model.backbone_weights) == (0.05, "/w/resnet50-0676ba61.pth")
    assert cfg.data.root == str(tmp_path)
    assert "changed: model.backbone_weights, train.lr" in capsys.readouterr().out


def test_mask_to_rgb_colours_background_ignore_and_classes():
    rgb = plots.mask_to_rgb(np.array([[0, 1, 2, 255, 21]], dtype=np.uint8))
    assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 3].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() != rgb[0, 2].tolist()
    assert rgb[0, 1].tolist() == rgb[0, 4].tolist()          # tab20 cycles after 20 classes


def test_cam_overlay_blends_the_jet_colour_of_the_cam():
    image = np.full((1, 2, 3), 200, dtype=np.uint8)
    out = cam_overlay(image, np.array([[0.0, 1.0]]), alpha=0.5)
    # jet(0) is dark blue (0, 0, 0.5), jet(1) dark red (0.5, 0, 0)
    assert out[0, 0].tolist() == [round(255 * 0.5 * 200 / 255), round(255 * 0.5 * 200 / 255),
                                  round(255 * (0.5 * 200 / 255 + 0.25))]
    assert out[0, 1, 0] > out[0, 1, 2]


def test_iou_gain_by_frequency_takes_thirds_by_count():
    counts = [100, 50, 40, 30, 20, 10]       # thirds: {0, 1} head, {4, 5} tail
    before = [0.5, 0.5, 0.4, 0.3, 0.2, 0.1]
    after = [0.5, 0.7, 0.4, 0.3, 0.4, math.nan]
    gains = plots.iou_gain_by_frequency(counts, before, after)
    assert gains["head_third_gain"] == pytest.approx(0.1)
    assert gains["tail_third_gain"] == pytest.approx(0.2)   # nan class left out


def test_mean_std_rows_groups_by_key_and_markdown_shows_the_spread():
    rows = [{"variant": "a", "seed": 0, "miou": 1.0, "CAM": "fused"},
            {"variant": "b", "seed": 0, "miou": 5.0, "CAM": "fused"},
            {"variant": "a", "seed": 1, "miou": 3.0, "CAM": "fused"}]
    out = plots.mean_std_rows(rows, "variant", drop=("seed",))
    assert [r["variant"] for r in out] == ["a", "b"] and "seed" not in out[0]
    assert out[0]["miou"] == 2.0 and out[0]["miou std"] == pytest.approx(math.sqrt(2.0))
    assert out[0]["n"] == 2 and out[0]["CAM"] == "fused"
    assert math.isnan(out[1]["miou std"])
    md = plots.table_markdown(out, digits=2).splitlines()
    assert md[0] == "| variant | n | miou | CAM |"
    assert md[2] == "| a | 2 | 2.00 ± 1.41 | fused |" and md[3] == "| b | 1 | 5.00 | fused |"


def test_target_rows_and_summary_say_what_was_missed():
    rows = [plots.target_row("rho", 0.7, ">=", 0.6), plots.target_row("gain", 1.5, ">=", 3.0, "sfc"),
            plots.target_row("ratio", None, "<", 0.9)]
    assert [r["met"] for r in rows] == ["yes", "NO", "NO"]
    summary = plots.targets_summary(rows)
    assert "2 of 3 targets missed" in summary and "gain (sfc): measured 1.5, target >= 3" in summary
    assert plots.targets_summary(rows[:1]) == "All 1 targets met."


def test_write_table_and_markdown(tmp_path):
    rows = [{"run": "sfc", "miou": 0.5}, {"run": "baseline", "miou": math.nan, "note": "x"}]
    plots.write_table(rows, tmp_path, "t")
    assert (tmp_path / "t.csv").read_text().splitlines() == ["run,miou,note", "sfc,0.5,", "baseline,nan,x"]
    assert json.loads((tmp_path / "t.json").read_text()) == [{"run": "sfc", "miou": 0.5},
                                                            {"run": "baseline", "miou": None, "note": "x"}]
    md = plots.table_markdown(rows, digits=2).splitlines()
    assert md[0] == "| run | miou | note |" and md[2] == "| sfc | 0.50 |  |" and md[3] == "| baseline | n/a | x |"


def test_published_numbers_match_docs_published_md():
    rows = {line for line in (REPO / "docs" / "published.md").read_text().splitlines() if line.startswith("| ")}
    for row in plots.PUBLISHED:
        assert f"| {row['source']} | {row['what']} | {row['split']} | {row['mIoU %']:g} |" in rows, row
    assert len(rows) == len(plots.PUBLISHED) + 2                  # header and rule


def test_paper_comparison_sets_the_authors_protocol_beside_the_published_cam_figures():
    from sfc_core.eval_files import CamEval

    cam_eval = CamEval({"list": "train", "rows": {"fused": {"miou": 0.7, "lambda": 1.0, "threshold": 0.3}},
                        "authors_protocol": {"rows": {"prototype": {"miou": 0.5, "lambda": None},
                                                      "fused": {"miou": 0.6, "lambda": 0.3}}}})
    rows = plots.paper_comparison(cam_eval)
    assert [(r["row"], r["this kit, mIoU % (train)"], r["compare with"]) for r in rows] == [
        ("authors' protocol: prototype CAM (their eval_cam.py)", 50.0, "SFC released log, VOC train: 63.1"),
        ("authors' protocol: fused CAM, lambda 0.3 fixed", 60.0, "SFC (AAAI 2024), published, VOC train: 64.7"),
        ("fused CAM tuned on the list it reports (lambda 1, threshold 0.3)", 70.0,
         "neither (chosen on the list it reports: optimistic)")]


def test_no_tracked_file_outside_tests_points_outside_the_repository():
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    pattern = re.compile(r"\.\./shared|reference_code\.md|synthetic_benchmark\.md|paper_numbers\.md")
    cited = [name for name in listed.stdout.splitlines()
             if not name.startswith("tests/") and (REPO / name).is_file()
             and pattern.search((REPO / name).read_text(errors="replace"))]
    assert cited == []


# -- run_all.sh ------------------------------------------------------------------------------


def _run_all(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "run_all.sh"), *args], capture_output=True, text=True,
                          timeout=600)


def test_run_all_rejects_bad_options_before_doing_anything():
    bad = _run_all("--no-such-option")
    assert bad.returncode == 2 and "unknown option --no-such-option" in bad.stderr
    missing = _run_all("--data-root", "/no/such/folder")
    assert missing.returncode == 2 and "is not a folder" in missing.stderr
    for other in (["--smoke"], ["--figures", "elsewhere"]):     # publishing is of the default run only
        refused = _run_all("--publish", *other)
        assert refused.returncode == 2 and "--publish refreshes the committed figures/" in refused.stderr


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout


# A stand-in for papermill (first on PYTHONPATH): records its arguments and, for the notebook
# named in SFC_FAIL_AT, writes the executed copy with a failed cell and prints tracebacks.
FAKE_PAPERMILL = """
import json, os, sys
args = sys.argv[1:]
with open(os.environ["SFC_ARGS_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if os.environ.get("SFC_FAIL_AT") in args[0]:
    error = {"output_type": "error", "ename": "SfcError", "traceback": ["Traceback (cell)"],
             "evalue": "cannot load ImageNet weights for resnet50\\n  file: /hub/x.pth\\n  fix:  pass --set"}
    cell = {"cell_type": "code", "source": "", "metadata": {}, "execution_count": 1, "outputs": [error]}
    with open(args[1], "w") as f:
        json.dump({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, f)
    print("Traceback (most recent call last):\\n" + "  papermill frame\\n" * 120, file=sys.stderr)
    sys.exit(1)
"""


def _run_all_with_fake_papermill(tmp_path, fail_at: str, *args: str):
    """run_all.sh with papermill replaced by FAKE_PAPERMILL: (result, papermill's argument lists)."""
    fake = tmp_path / "fake" / "papermill"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(FAKE_PAPERMILL)
    log = tmp_path / "args.jsonl"
    name = f"test-run-all-{tmp_path.name}"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake"), "SFC_ARGS_LOG": str(log), "SFC_FAIL_AT": fail_at}
    try:
        result = subprocess.run(["bash", str(REPO / "run_all.sh"), "--smoke", "--name", name,
                                 "--figures", str(tmp_path / "figures"), *args],
                                capture_output=True, text=True, timeout=120, env=env)
    finally:
        shutil.rmtree(REPO / "runs" / name, ignore_errors=True)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return result, calls


def test_run_all_hands_set_and_config_to_every_notebook(tmp_path):
    """--set (repeatable) and --config reach every notebook as its overrides and config_file
    parameters; real papermill (--prepare-only) writes them into the notebook as given."""
    config = tmp_path / "paper.txt"
    config.write_text("train.lr=0.05\n")
    sets = ["model.backbone_weights=/w dir/resnet50-0676ba61.pth", 'data.note="quoted" value']
    result, calls = _run_all_with_fake_papermill(tmp_path, "none", "--config", str(config),
                                                 "--set", sets[0], "--set", sets[1])
    assert result.returncode == 0, result.stderr
    assert [Path(call[0]).stem for call in calls] == [p.stem for p in NOTEBOOKS]
    for call in calls:
        assert call[call.index("config_file") + 1] == str(config)
        assert call[call.index("-y") + 1].startswith("overrides: ")
    prepared = tmp_path / "prepared.ipynb"
    replay = [calls[0][0], str(prepared), *calls[0][2:], "--prepare-only"]
    subprocess.run([sys.executable, "-m", "papermill", *replay], check=True, capture_output=True, cwd=REPO)
    injected = next(c.source for c in nbformat.read(prepared, as_version=4).cells
                    if "injected-parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(injected, namespace)
    assert namespace["overrides"] == sets and namespace["config_file"] == str(config)
    bad = _run_all("--set", "no-equals-sign")
    assert bad.returncode == 2 and "--set no-equals-sign is not KEY=VALUE" in bad.stderr
    missing = _run_all("--config", str(tmp_path / "no-such-file"))
    assert missing.returncode == 2 and "is not a file" in missing.stderr


def test_run_all_prints_the_kits_message_and_the_copy_not_the_tracebacks(tmp_path):
    result, calls = _run_all_with_fake_papermill(tmp_path, "01_long_tail_analysis")
    assert result.returncode == 1 and len(calls) == 2            # stopped at the failing notebook
    copy = f"runs/test-run-all-{tmp_path.name}/executed/01_long_tail_analysis.ipynb"
    assert "[run_all] FAILED: notebook 01_long_tail_analysis\n" in result.stderr
    assert ("error: cannot load ImageNet weights for resnet50\n  file: /hub/x.pth\n  fix:  pass --set\n"
            in result.stderr)
    assert copy in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.splitlines()) <= 6


def test_failure_message_without_an_error_cell_quotes_papermills_log(tmp_path):
    log = tmp_path / "nb.log"
    log.write_text("Input Notebook: x\nNoSuchKernel: No such kernel named python3\n\n")
    assert failure_message(tmp_path / "missing.ipynb", log) == \
        "error: no cell raised; papermill's log ends: NoSuchKernel: No such kernel named python3"
    executed = tmp_path / "x.ipynb"
    executed.write_text(json.dumps({"cells": [{"outputs": [{"output_type": "error", "ename": "KeyError",
                                                            "evalue": "'x'"}]}]}))
    assert failure_message(executed, log) == "error: KeyError: 'x'"


@pytest.mark.slow
def test_run_all_stops_at_the_first_failing_notebook_and_names_it(tmp_path):
    """... and, without --publish, writes only under runs/ (ignored): the checkout stays as it was."""
    name = f"test-run-all-{tmp_path.name}"
    before = _git_status()
    try:
        result = _run_all("--preset", "no-such-preset", "--name", name)
        assert (REPO / "runs" / name / "executed" / "00_data.ipynb").is_file()
    finally:
        shutil.rmtree(REPO / "runs" / name, ignore_errors=True)
    assert result.returncode == 1
    assert "FAILED: notebook 00_data" in result.stderr
    assert "01_long_tail_analysis" not in result.stdout
    assert f"figures: {REPO / 'runs' / name / 'figures'}" in result.stdout
    assert _git_status() == before
