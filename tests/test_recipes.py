"""benchmarks.recipes' seed sets, variants and run plan, and benchmarks.seed_table's summary of many seeds."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks import recipes, seed_table
from sfc_core.config import Config
from sfc_core.errors import SfcError


def _args(seeds, *more, **flags):
    parser = recipes.arguments()
    args = parser.parse_args(["--seeds", *map(str, seeds), *more, *[f"--{k}" for k, on in flags.items() if on]])
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
        variant, job_seed, control_cfg, run_dir, methods, step3 = jobs[f"baseline-control-seed{seed}"]
        assert (variant, job_seed) == ("baseline-control", seed)
        assert run_dir == tmp_path / f"baseline-control-seed{seed}"
        assert control_cfg.data.shared_parts is False
        assert control_cfg.data.synthetic_seed == cfg.data.synthetic_seed + seed
        assert control_cfg.runtime.seed == cfg.runtime.seed + seed
        assert (methods, step3) == ([], [])
    assert "baseline-control" not in jobs
    assert recipes.finished_seeds(tmp_path, [1, 2], ["baseline-control"]) == []   # --finished-only asks for it


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
    assert recipes.finished_seeds(tmp_path, [100, 101, 102], ["sfc", "baseline"]) == [100]
    assert recipes.finished_seeds(tmp_path, [100, 101], ["sfc", "baseline", "baseline-control"]) == [100]
    assert recipes.finished_seeds(tmp_path, [100], ["sfc", "baseline", "toy"]) == []


def _row(seed, variant, cls, proto, fused, spearman, lost, edges=()):
    return {"seed": seed, "variant": variant, "CAM": "classifier" if variant == "baseline" else "fused",
            "classifier CAM mIoU % (eval)": cls,
            "prototype CAM mIoU % (eval)": proto, "fused CAM mIoU % (eval)": fused, "mIoU % (held-out)": fused,
            "Spearman": spearman, **{f"Spearman {k}": spearman for k in seed_table.KINDS},
            "lambda (fused)": 1.0, **{f"threshold ({k})": 0.975 if k == "prototype" else 0.9 for k in seed_table.KINDS},
            "head ratio": 1.3, "tail ratio": 0.2, "heads' shared-part recall": 0.85,
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
    assert result["figures"]["control heads' shared-part recall"]["n"] == 0
    with_control = seed_table.summary([*rows, {**_row(100, "baseline-control", 60.0, 60.0, 60.0, -0.1, 2.0),
                                               "heads' shared-part recall": 0.8}])
    recall = with_control["figures"]["control heads' shared-part recall"]
    assert recall["per seed"][100] == 0.8 and math.isnan(recall["per seed"][101]) and recall["n"] == 1
    assert with_control["figures"]["control classifier Spearman"]["per seed"][100] == -0.1
    control_targets = {t["target"]: t for t in with_control["targets"]}
    assert control_targets["lost to head >= 10 points above the control"]["seeds meeting it"] == 1
    assert control_targets["heads' shared-part recall >= 0.1 above the control"]["missed on seeds"] == [100]
    table = seed_table.markdown(result, [100, 101, 102])
    assert "Seeds: 2 of the 3 planned (100 101); not finished: 102." in table
    assert "| CAM mIoU gain >= 3 points | fix (SFC fused vs baseline classifier) | 1 of 2 | 101 |" in table
    assert "- fused: the chosen lambda 30 is the largest swept (0-30): sfc on seeds 101\n" in table
    assert "| chosen threshold: baseline prototype | 0.975 ± 0.000 | 0.975..0.975 | 2 | 0.975 | 0.975 |" in table
    assert "| lost to head >= 10 points above the control | mechanism (baseline) | not measured | - |" in table
    assert result["fused CAM not above the prototype CAM"] == {"baseline": [100, 101], "SFC": [100, 101]}
    assert "baseline on 2 of 2 seeds (100 101); SFC on 2 of 2 seeds (100 101)." in table


def test_a_seed_without_its_sfc_row_is_left_out():
    assert seed_table.by_seed([_row(5, "baseline", 1, 1, 1, 0.1, 1)]) == {}
    assert seed_table.markdown(seed_table.summary([]), [5]).startswith("Seeds: 0 of the 1 planned (none)")


def test_the_presets_sweeps_reach_past_the_settings_chosen_on_the_development_seeds():
    """SFC's fused CAM chose lambda 1.0, the largest of voc's sweep, on development seeds; the
    baseline's prototype CAM the threshold 0.95, then the largest, on reporting seeds 104, 109."""
    cams = Config.from_preset("synthetic-paper").cams
    assert max(cams.lambda_sweep) > 1.0 and max(cams.threshold_sweep) > 0.95


def test_finished_only_with_nothing_finished_reports_no_seed(tmp_path, capsys):
    assert recipes.main(["--preset", "synthetic-smoke", "--seeds", "reporting", "--finished-only",
                         "--out", str(tmp_path / "runs"), "--table", str(tmp_path / "t.md"),
                         "--set", f"data.root={tmp_path / 'data'}"]) == 0
    assert (tmp_path / "t.md").read_text().startswith("Seeds: 0 of the 10 planned (none); not finished: 100 ")
    assert (tmp_path / "t.json").is_file()
    assert not (tmp_path / "data").exists()            # nothing generated, nothing trained


def test_report_rows_name_each_run_once(tmp_path, monkeypatch):
    """An SFC run of seed s is named "sfc-seed<s>": it is no ablation ("sfc-<name>", seed 0). Each
    run is compared with its seed's baseline where it has the baseline's data (not the control)."""
    monkeypatch.setitem(recipes.VARIANTS, "toy", {"loss.scale_weight": 0.0})
    monkeypatch.setattr(recipes, "CamEval", lambda data: data)
    monkeypatch.setattr(recipes, "open_dataset", lambda data: f"shared parts {data.shared_parts}")
    monkeypatch.setattr(recipes, "figures", lambda variant, run_dir, by_stage, dataset, base:
                        {"variant": variant, "dataset": dataset, "compared": base is not None})
    cfg = Config.from_preset("synthetic-smoke")
    jobs = recipes.plan(cfg, _args([0, 100], "--variants", "toy", control=True, ablations=True), tmp_path, [])
    rows = recipes.report_rows(jobs, {name: {"cams + eval": {}} for name in jobs}, {0: "seed 0", 100: "seed 100"})
    assert [(r["seed"], r["variant"], r["compared"]) for r in rows] == [
        (0, "baseline", False), (0, "sfc", True), (100, "baseline", False), (100, "sfc", True),
        (0, "toy", True), (100, "toy", True), *[(0, name, True) for name in recipes.ablation_variants()],
        (0, "baseline-control", False), (100, "baseline-control", False)]
    assert [r["dataset"] for r in rows if r["variant"] == "toy"] == ["seed 0", "seed 100"]
    assert [r["dataset"] for r in rows if r["variant"] == "baseline-control"] == ["shared parts False"] * 2


def test_a_variant_runs_on_every_seed_with_its_overrides_and_the_same_stages(tmp_path, monkeypatch):
    monkeypatch.setitem(recipes.VARIANTS, "toy", {"loss.scale_weight": 0.0})
    cfg = Config.from_preset("synthetic-smoke")
    jobs = recipes.plan(cfg, _args([0, 5], "--variants", "toy", "--mask-seeds", "5"), tmp_path, ["crf"])
    assert list(jobs) == ["sfc", "baseline", "toy", "sfc-seed5", "baseline-seed5", "toy-seed5"]
    toy = jobs["toy-seed5"]
    assert (toy.variant, toy.seed, toy.run_dir) == ("toy", 5, tmp_path / "toy-seed5")
    assert toy.cfg.loss.scale_weight == 0.0 and toy.cfg.loss.prototype_weight == cfg.loss.prototype_weight
    assert toy.cfg.runtime.seed == cfg.runtime.seed + 5 == jobs["sfc-seed5"].cfg.runtime.seed
    assert (toy.methods, toy.step3) == (["crf"], [cfg.refine.method]) == jobs["sfc-seed5"][4:]
    assert (jobs["toy"].methods, jobs["toy"].step3) == ([], [])


@pytest.mark.parametrize("name, message", [("nope", "no variant named 'nope'"),
                                           ("a-seed3", "cannot name a run's folder"),
                                           ("a/b", "cannot name a run's folder")])
def test_a_variant_not_registered_or_unfit_for_a_folder_stops_with_one_message(tmp_path, monkeypatch, name, message):
    monkeypatch.setitem(recipes.VARIANTS, "a-seed3", {})
    monkeypatch.setitem(recipes.VARIANTS, "a/b", {})
    with pytest.raises(SfcError, match=message):
        recipes.plan(Config.from_preset("synthetic-smoke"), _args([0], "--variants", name), tmp_path, [])
    with pytest.raises(SfcError, match="unknown configuration key 'loss.nope'"):
        monkeypatch.setitem(recipes.VARIANTS, "typo", {"loss.nope": 1})
        recipes.plan(Config.from_preset("synthetic-smoke"), _args([0], "--variants", "typo"), tmp_path, [])


def test_the_summary_gives_each_variant_its_rows():
    rows = [_row(100, "baseline", 30.0, 35.0, 31.0, 0.8, 60.0), _row(100, "sfc", 40.0, 44.0, 42.0, 0.4, 35.0),
            {**_row(100, "toy", 36.0, 39.0, 38.0, 0.5, 40.0), "CAM": "fused"},
            _row(101, "baseline", 29.0, 34.0, 30.0, 0.7, 58.0), _row(101, "sfc", 31.0, 33.0, 31.5, 0.9, 40.0)]
    figures = seed_table.summary(rows)["figures"]
    assert figures["toy fused CAM mIoU % (eval)"]["per seed"] == {100: 38.0}
    assert figures["gain: toy fused - baseline classifier"]["per seed"] == {100: 8.0}
    assert figures["toy fused - SFC fused"]["per seed"] == {100: -4.0}
    assert figures["toy's training: toy prototype - baseline prototype"]["per seed"] == {100: 4.0}
    assert figures["toy's training: toy fused - baseline fused"]["per seed"] == {100: 7.0}
    assert figures["toy fused - toy prototype"]["per seed"] == {100: -1.0}
    assert figures["toy fused Spearman"]["n"] == 1
    table = seed_table.markdown(seed_table.summary(rows), [100, 101])
    assert "| gain: toy fused - baseline classifier | 8.0 ± n/a | 8.0..8.0 | 1 | 8.0 | n/a |" in table


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


def test_a_registered_variant_runs_beside_sfc_and_the_baseline_and_gets_its_rows(tmp_path, monkeypatch, capsys,
                                                                                 smoke_config):
    """issue 30: a method in the comparison harness is one entry of ``recipes.VARIANTS``; this is
    docs/extending.md's example, at the cheapest settings (2 steps, one CAM scale)."""
    monkeypatch.setitem(recipes.VARIANTS, "sfc-half-prototype-loss", {"loss.prototype_weight": 0.8})
    out = tmp_path / "runs"
    assert recipes.main(["--preset", "synthetic-smoke", "--seeds", "0", "--variants", "sfc-half-prototype-loss",
                         "--mask-seeds", "--step3", "none", "--processes", "1", "--out", str(out),
                         "--table", str(tmp_path / "seeds.md"), "--set", f"data.root={smoke_config.data.root}",
                         "--set", "train.max_steps=2", "--set", "cams.scales=1.0", "--set", "cams.flip=false"]) == 0
    printed = capsys.readouterr().out
    assert "| 0 | sfc-half-prototype-loss | fused |" in printed                 # the runs' table
    assert "| gain: sfc-half-prototype-loss fused - baseline classifier |" in printed   # the seeds' table
    report = json.loads((out / "recipes-synthetic-smoke.json").read_text())
    assert [r["variant"] for r in report["rows"]] == ["baseline", "sfc", "sfc-half-prototype-loss"]
    row = report["rows"][2]
    assert row["seed"] == 0 and 0 < row["fused CAM mIoU % (eval)"] < 100
    assert report["summary"]["figures"]["sfc-half-prototype-loss fused CAM mIoU % (eval)"]["n"] == 1
    assert "sfc-half-prototype-loss" in (tmp_path / "seeds.md").read_text()
    run_config = json.loads((out / "synthetic-smoke" / "sfc-half-prototype-loss" / "config.json").read_text())
    assert run_config["loss"]["prototype_weight"] == 0.8 and run_config["train"]["max_steps"] == 2
