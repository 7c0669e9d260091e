"""benchmarks.recipes' seed sets and run plan, and benchmarks.seed_table's summary of many seeds."""
from __future__ import annotations

import math

import pytest

from benchmarks import recipes, seed_table
from sfc_core.config import Config
from sfc_core.errors import SfcError


def _args(seeds, **flags):
    parser = recipes.arguments()
    args = parser.parse_args(["--seeds", *map(str, seeds), *[f"--{k}" for k, on in flags.items() if on]])
    args.seeds = recipes.parse_seeds(args.seeds)
    return args


def test_seed_sets_are_named_once_and_never_overlap():
    assert recipes.parse_seeds(["reporting"]) == list(recipes.REPORTING_SEEDS)
    assert recipes.parse_seeds(["development"]) == [0, 1, 2]
    assert recipes.parse_seeds(["7", "100"]) == [7, 100]
    assert len(recipes.REPORTING_SEEDS) >= 10
    assert not set(recipes.DEVELOPMENT_SEEDS) & set(recipes.REPORTING_SEEDS)
    with pytest.raises(SfcError, match="--seeds takes integers"):
        recipes.parse_seeds(["heldout"])


def test_the_control_runs_for_every_seed_asked(tmp_path):
    """--control was silently dropped unless seed 0 was among --seeds."""
    cfg = Config.from_preset("synthetic-smoke")
    jobs = recipes.plan(cfg, _args([1, 2], control=True), tmp_path, ["crf"])
    for seed in (1, 2):
        control_cfg, run_dir, methods, step3 = jobs[f"baseline-control-seed{seed}"]
        assert run_dir == tmp_path / f"baseline-control-seed{seed}"
        assert control_cfg.data.shared_parts is False
        assert control_cfg.data.synthetic_seed == cfg.data.synthetic_seed + seed
        assert control_cfg.runtime.seed == cfg.runtime.seed + seed
        assert (methods, step3) == ([], [])
    assert "baseline-control" not in jobs


@pytest.mark.parametrize("flag", ["ablations", "gt"])
def test_seed_0_options_stop_with_one_message_without_seed_0(tmp_path, flag):
    cfg = Config.from_preset("synthetic-smoke")
    with pytest.raises(SfcError, match="seed 0 only"):
        recipes.plan(cfg, _args([100], **{flag: True}), tmp_path, ["crf"])
    assert "sfc-no-bank" in recipes.plan(cfg, _args([0], ablations=True), tmp_path, ["crf"])


def test_finished_seeds_are_those_with_every_run_evaluated(tmp_path):
    for name in ("baseline-seed100", "sfc-seed100", "sfc-seed101", "baseline-control-seed100"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cam_eval.json").write_text("{}")
    assert recipes.finished_seeds(tmp_path, [100, 101, 102], control=False) == [100]
    assert recipes.finished_seeds(tmp_path, [100, 101], control=True) == [100]


def _row(seed, variant, cls, proto, fused, spearman, lost, edges=()):
    return {"seed": seed, "variant": variant, "classifier CAM mIoU % (eval)": cls,
            "prototype CAM mIoU % (eval)": proto, "fused CAM mIoU % (eval)": fused, "mIoU % (held-out)": fused,
            "Spearman": spearman, **{f"Spearman {k}": spearman for k in seed_table.KINDS},
            "lambda (fused)": 1.0, "head ratio": 1.3, "tail ratio": 0.2, "heads' shared-part recall": 0.85,
            "non-head lost to head %": lost, "head-third IoU gain": 0.0, "tail-third IoU gain": 10.0,
            "sweep edges": list(edges)}


def test_the_summary_gives_spread_and_the_seeds_meeting_each_target():
    rows = [_row(100, "baseline", 30.0, 35.0, 31.0, 0.8, 60.0), _row(100, "sfc", 40.0, 44.0, 42.0, 0.4, 35.0),
            _row(101, "baseline", 29.0, 34.0, 30.0, 0.7, 58.0),
            _row(101, "sfc", 31.0, 33.0, 31.5, 0.9, 40.0, ["fused: the chosen lambda 30 is the largest swept (0-30)"])]
    result = seed_table.summary(rows)
    gain = result["figures"]["gain: SFC fused - baseline classifier"]
    assert gain["per seed"] == {100: 12.0, 101: 2.5}
    assert (gain["n"], gain["mean"], gain["min"], gain["max"]) == (2, 7.25, 2.5, 12.0)
    assert math.isclose(gain["sd"], math.sqrt(2 * 4.75 ** 2))
    assert result["figures"]["of it, prototypes at inference: baseline prototype - baseline classifier"]["mean"] == 5.0
    targets = {t["target"]: t for t in result["targets"]}
    assert targets["CAM mIoU gain >= 3 points"]["seeds meeting it"] == 1
    assert targets["CAM mIoU gain >= 3 points"]["missed on seeds"] == [101]
    assert targets["Spearman lower"]["missed on seeds"] == [101]
    assert targets["lost to head >= 10 points above the control"]["seeds measured"] == 0
    table = seed_table.markdown(result, [100, 101, 102])
    assert "Seeds: 2 of the 3 planned (100 101); not finished: 102." in table
    assert "| CAM mIoU gain >= 3 points | fix (SFC fused vs baseline classifier) | 1 of 2 | 101 |" in table
    assert "sfc seed 101: fused: the chosen lambda 30 is the largest swept" in table
    assert "| lost to head >= 10 points above the control | mechanism (baseline) | not measured | - |" in table
    assert result["fused CAM not above the prototype CAM"] == {"baseline": [100, 101], "SFC": [100, 101]}
    assert "baseline on 2 of 2 seeds (100 101); SFC on 2 of 2 seeds (100 101)." in table


def test_a_seed_without_its_sfc_row_is_left_out():
    assert seed_table.by_seed([_row(5, "baseline", 1, 1, 1, 0.1, 1)]) == {}
    assert seed_table.markdown(seed_table.summary([]), [5]).startswith("Seeds: 0 of the 1 planned (none)")


def test_the_presets_sweeps_reach_past_the_settings_chosen_on_the_development_seeds():
    """SFC's fused CAM chose lambda 1.0, the largest of voc's sweep, on development seeds."""
    cams = Config.from_preset("synthetic-paper").cams
    assert max(cams.lambda_sweep) > 1.0 and max(cams.threshold_sweep) > 0.9


def test_finished_only_with_nothing_finished_reports_no_seed(tmp_path, capsys):
    assert recipes.main(["--preset", "synthetic-smoke", "--seeds", "reporting", "--finished-only",
                         "--out", str(tmp_path / "runs"), "--table", str(tmp_path / "t.md"),
                         "--set", f"data.root={tmp_path / 'data'}"]) == 0
    assert (tmp_path / "t.md").read_text().startswith("Seeds: 0 of the 10 planned (none); not finished: 100 ")
    assert (tmp_path / "t.json").is_file()
    assert not (tmp_path / "data").exists()            # nothing generated, nothing trained


def test_report_rows_name_each_run_once(tmp_path, monkeypatch):
    """An SFC run of seed s is named "sfc-seed<s>": it is no ablation ("sfc-<name>", seed 0)."""
    monkeypatch.setattr(recipes, "CamEval", lambda data: data)
    monkeypatch.setattr(recipes, "figures", lambda variant, run_dir, by_stage, dataset, base: {"variant": variant})
    cfg = Config.from_preset("synthetic-smoke")
    jobs = recipes.plan(cfg, _args([0, 100], control=True, ablations=True), tmp_path, [])
    rows = recipes.report_rows(jobs, {name: {"cams + eval": {}} for name in jobs}, {0: None, 100: None})
    assert [(r["seed"], r["variant"]) for r in rows] == [
        (0, "baseline"), (0, "sfc"), (100, "baseline"), (100, "sfc"),
        *[(0, f"sfc-{name}") for name in recipes.ablation_names()],
        (0, "baseline-control"), (100, "baseline-control")]


def test_finished_only_reads_what_each_run_evaluated_and_runs_nothing(tmp_path):
    run = tmp_path / "sfc-seed100"
    (run / "segment" / "crf").mkdir(parents=True)
    (run / "cam_eval.json").write_text('{"list": "train"}')
    (run / "seg_eval.json").write_text('{"methods": {"crf": {"miou": 0.4}}}')
    (run / "segment" / "crf" / "final_eval.json").write_text('{"miou": 0.25}')
    out = recipes.stored_results(run, ["crf", "irn"], ["crf", "irn"])
    assert out == {"cams + eval": {"list": "train"}, "pseudo masks crf": {"methods": {"crf": {"miou": 0.4}}},
                   "step 3 on crf": {"miou": 0.25}}
    assert list(recipes.stored_results(run, [], [])) == ["cams + eval"]
