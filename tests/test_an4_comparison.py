"""Tests for bench/an4_comparison.py: the run plan, the dev-speaker choice, stage bookkeeping and
the report tables.

The eval.json / train_time.json inputs of the report tests are FABRICATED FIXTURES (numbers made up
for the test), not measurements; the end-to-end script needs far more than a test's time budget.
"""
import json
import pathlib
import sys

import pytest

from dsnn_keras.beam_search import BeamSearchConfig, DecoderSettings
from harness_bench import load_bench_script

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_script():
    return load_bench_script("an4_comparison")


cmp = _load_script()

AN4_SPEAKERS = (
    "fash fbbh fclc fejs ffmm fjam fjdn fjmd fkai fkdo flmm2 flrp fmjc fmjd fnsv fplp fsaf2 fsrb "
    "ftal ftmj fwxs mblb mblw mbmg mcel mcen mcfl mcrt mcsc mdcs mdcs2 mdmc mdxn mdxs meab meht "
    "mema mewl mfaa mgah mjbh mjda mjdr mjes mjgk mjhp mjjs2 mkdb mkem mmaf mmal mmap mmdg mmkw "
    "mmsh mmtm mnfe mnjl mrab mrcb mrjc2 mrmg mscg2 msct msjm msjr mskh msmn msrb mtcv mtje mtos "
    "mtxj mwhw").split()


def test_picks_ten_distinct_an4_speakers_deterministically_from_any_order():
    picked = cmp.pick_dev_speakers(AN4_SPEAKERS, 10)
    assert picked == cmp.pick_dev_speakers(list(reversed(AN4_SPEAKERS)), 10)
    assert len(set(picked)) == 10 and set(picked) <= set(AN4_SPEAKERS)
    # Every 7th of the 74 sorted ids, from the 4th: 3 female and 7 male speakers.
    assert picked == sorted(AN4_SPEAKERS)[3::7][:10]
    assert sum(s.startswith("f") for s in picked) == 3


def test_refuses_to_hold_out_every_speaker():
    with pytest.raises(ValueError, match="more than 10 speakers"):
        cmp.pick_dev_speakers(AN4_SPEAKERS[:10], 10)


def test_plans_two_dsnn_runs_and_one_single_run_per_level():
    runs = cmp.plan_runs((0.0, 0.5, 0.7, 0.9), distillation_weight=0.5, common=["training.total_steps=7"])
    # The distillation ablation runs last, so a cut-short comparison still has the main table.
    assert [r.name for r in runs] == ["dsnn", "single_00", "single_50", "single_70", "single_90",
                                      "dsnn_nodistill"]
    by_name = {r.name: r for r in runs}
    assert "training.distillation_weight=0.5" in by_name["dsnn"].overrides
    assert "training.distillation_weight=0.0" in by_name["dsnn_nodistill"].overrides
    assert "pruning.single_sparsity=0.7" in by_name["single_70"].overrides
    assert all("training.total_steps=7" in r.overrides for r in runs)


@pytest.fixture
def base_config(tmp_path):
    """configs/tiny.yaml with a fixed 60-step schedule (begin 10, end 40), written to tmp_path."""
    from dsnn_keras.config import apply_overrides, dump_config, load_config

    config = apply_overrides(load_config(ROOT / "configs" / "tiny.yaml"), [
        "training.total_steps=60", "training.warmup_steps=6", "training.eval_every=30",
        "training.checkpoint_every=20", "pruning.begin_step=10", "pruning.end_step=40",
        "pruning.frequency=5"])
    path = tmp_path / "base.yaml"
    dump_config(config, path)
    return path


def test_generated_configs_share_architecture_and_budget_and_differ_in_mode(tmp_path, base_config):
    from dsnn_keras.config import load_config

    base = load_config(base_config)
    common = cmp.step_overrides(base, 30)
    configs = {}
    for spec in cmp.plan_runs((0.0, 0.5, 0.7, 0.9), 1.0, common):
        path = tmp_path / f"{spec.name}.yaml"
        cmp.write_run_config(base_config, spec.overrides, path)
        configs[spec.name] = load_config(path)
    assert {c.model for c in configs.values()} == {base.model}
    assert {c.training.total_steps for c in configs.values()} == {30}
    # The schedule is scaled with the budget: 60 -> 30 steps halves every step count.
    assert {(c.pruning.begin_step, c.pruning.end_step) for c in configs.values()} == {(5, 20)}
    assert {(c.training.warmup_steps, c.training.eval_every) for c in configs.values()} == {(3, 15)}
    assert configs["dsnn"].effective_levels == (0.0, 0.5, 0.7, 0.9)
    assert configs["dsnn"].training.distillation_weight == 1.0
    assert configs["dsnn_nodistill"].training.distillation_weight == 0.0
    assert configs["single_90"].training.mode == "single"
    assert configs["single_90"].effective_levels == (0.9,)


def test_step_override_scales_the_learning_rate_hold_of_the_an4_recipe():
    from dsnn_keras.config import apply_overrides, load_config

    base = load_config(ROOT / "configs" / "an4_2200.yaml")
    assert (base.training.total_steps, base.training.decay_begin_step) == (2200, 1300)
    scaled = apply_overrides(base, cmp.step_overrides(base, 1100))
    assert (scaled.training.total_steps, scaled.training.decay_begin_step) == (1100, 650)
    assert scaled.training.warmup_steps == 75 and scaled.training.decay_begin_step < 1100
    assert apply_overrides(base, cmp.step_overrides(base, 2200)).training == base.training


def test_the_an4_recipe_is_the_2200_step_recipe_scaled_to_4400_steps_every_level_per_step_whole_split_shuffled():
    from dsnn_keras.config import apply_overrides, load_config

    old = load_config(ROOT / "configs" / "an4_2200.yaml")
    recipe = load_config(ROOT / "configs" / "an4.yaml")
    assert apply_overrides(old, [*cmp.step_overrides(old, 4400), "training.sandwich_levels=null",
                                 "data.shuffle_buffer=null"]) == recipe


def test_step_override_rejects_a_non_positive_budget():
    from dsnn_keras.config import load_config

    with pytest.raises(ValueError, match="--steps must be > 0"):
        cmp.step_overrides(load_config(ROOT / "configs" / "tiny.yaml"), 0)


def test_run_logged_measures_the_childs_cpu_time_and_reports_failures(tmp_path):
    busy = [sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass"]
    timing = cmp.run_logged("busy", busy, tmp_path / "busy.log")
    assert timing["cpu_s"] >= 0.25
    assert timing["wall_s"] >= timing["cpu_user_s"] * 0.5
    with pytest.raises(cmp.ComparisonError, match="exit status 3; see .*fail.log"):
        cmp.run_logged("fail", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                       tmp_path / "fail.log")
    assert "boom" in (tmp_path / "fail.log").read_text()


# ---- report generation on FABRICATED eval.json / train_time.json fixtures ----------------------
FAKE_WER = {  # run -> WER per level (fixtures, not measurements)
    "dsnn": [0.20, 0.21, 0.23, 0.30],
    "dsnn_nodistill": [0.21, 0.22, 0.25, 0.36],
    "single_00": [0.19], "single_50": [0.20], "single_70": [0.22], "single_90": [0.25],
}
FAKE_CPU = {"dsnn": 3000.0, "dsnn_nodistill": 2800.0, "single_00": 1000.0, "single_50": 1000.0,
            "single_70": 1000.0, "single_90": 1200.0}


def _write_fake_runs(out_dir):
    levels = (0.0, 0.5, 0.7, 0.9)
    runs = cmp.plan_runs(levels, 1.0)
    for spec in runs:
        run_dir = out_dir / "runs" / spec.name
        run_dir.mkdir(parents=True)
        sparsities = levels if spec.kind == "dsnn" else (spec.sparsity,)
        entries = [{"level": i, "sparsity": s, "wer": w, "cer": w / 2, "rtf": 0.01,
                    "num_utterances": 130, "model_params": 1000, "prunable_params": 800}
                   for i, (s, w) in enumerate(zip(sparsities, FAKE_WER[spec.name]))]
        (run_dir / "eval.json").write_text(json.dumps({"split": "dev", "levels": entries}))
        (run_dir / "train_time.json").write_text(json.dumps(
            {"cpu_s": FAKE_CPU[spec.name], "wall_s": FAKE_CPU[spec.name] / 2, "resumed": False}))
    return runs, levels


def test_comparison_rows_pair_each_dsnn_level_with_its_single_model(tmp_path):
    runs, levels = _write_fake_runs(tmp_path)
    results = cmp.collect_results(tmp_path, runs, levels, {"dev_speakers": ["a"]}, "cmd")
    rows = results["rows"]
    assert [r["single_wer"] for r in rows] == [0.19, 0.20, 0.22, 0.25]
    assert rows[0]["ratio"] == pytest.approx(0.20 / 0.19)
    assert rows[3]["ratio"] == pytest.approx(0.30 / 0.25)
    assert [r["meets_ratio_goal"] for r in rows] == [True, True, True, False]
    assert rows[3]["nodistill_ratio"] == pytest.approx(0.36 / 0.25)
    assert results["goals"] == {"ratio_goal_met": False, "dense_goal_met": True,
                                "ratio_levels_measured": [0, 1, 2, 3], "ratio_levels_failed": [3]}
    assert results["cpu"]["singles_cpu_s"] == 4200.0
    assert results["cpu"]["dsnn_over_singles"] == pytest.approx(3000 / 4200)
    assert results["setup"]["model_params"] == 1000


def test_report_markdown_shows_the_table_cpu_times_and_goals(tmp_path):
    runs, levels = _write_fake_runs(tmp_path)
    results = cmp.collect_results(tmp_path, runs, levels, {"dev_speakers": ["fash", "mkem"]},
                                  "python bench/an4_comparison.py --steps 10")
    text = cmp.render_report(results)
    assert "python bench/an4_comparison.py --steps 10" in text
    assert "| 3 | 0.90 | 30.0 | 25.0 | 1.20× | **no** | 36.0 | 1.44× |" in text
    assert "| 0 | 0.00 | 20.0 | 19.0 | 1.05× | yes | 21.0 | 1.11× |" in text
    assert "| 4 single-level models together | 70.0 min | 35.0 min |" in text
    assert "DSNN / singles CPU time: 0.71×" in text
    assert "fash, mkem" in text
    assert "**not met**" in text


FAKE_BEAM_WER = {"dsnn": [0.07, 0.09, 0.10, 0.13], "single_00": [0.08], "single_50": [0.08],
                 "single_70": [0.10], "single_90": [0.11]}   # fixtures, not measurements


def _write_fake_beam_evals(out_dir, runs):
    for spec in runs:
        if spec.name not in FAKE_BEAM_WER:
            continue
        directory = out_dir / "evals_beam" / spec.name
        (directory / "decoder").mkdir(parents=True)
        sparsities = (0.0, 0.5, 0.7, 0.9) if spec.kind == "dsnn" else (spec.sparsity,)
        entries = [{"level": i, "sparsity": s, "wer": w, "cer": w / 2, "rtf": 0.01, "num_utterances": 130}
                   for i, (s, w) in enumerate(zip(sparsities, FAKE_BEAM_WER[spec.name]))]
        (directory / "eval_beam.json").write_text(json.dumps({"split": "dev", "levels": entries}))
        DecoderSettings(beam=BeamSearchConfig(lm_weight=0.75, word_bonus=2.0, beam_threshold=15.0, token_beam=4,
                                              blank_skip=0.99, token_min_logp=-6.0)).write(directory / "decoder")


def test_beam_rows_pair_levels_and_check_issue_18s_goals(tmp_path):
    runs, levels = _write_fake_runs(tmp_path)
    assert cmp.collect_results(tmp_path, runs, levels, {}, "cmd")["beam_rows"] == []
    _write_fake_beam_evals(tmp_path, runs)
    results = cmp.collect_results(tmp_path, runs, levels, {}, "cmd")
    rows = results["beam_rows"]
    assert [r["single_wer"] for r in rows] == [0.08, 0.08, 0.10, 0.11]
    assert [r["meets_ratio_goal"] for r in rows] == [True, False, True, False]
    assert results["beam_goals"]["ratio_levels_failed"] == [1, 3]
    assert results["beam_goals"]["dense_goal_met"] is True        # 7 % <= 8 %
    assert results["beam_goals"]["sparsest_goal_met"] is False    # 13 % > 12 %
    text = cmp.render_report(results)
    assert "## Dev WER per level, beam search + word 3-gram LM" in text
    assert "| 3 | 0.90 | 13.0 | 11.0 | 1.18× | **no** |" in text
    assert "dsnn 0.75 / 2.0 (threshold 15.0, token beam 4, blank skip 0.99, token floor -6.0)" in text
    assert "90 % level ≤ 12 %: **not met** (13.0 %)" in text


def test_report_marks_missing_runs_instead_of_failing(tmp_path):
    runs, levels = _write_fake_runs(tmp_path)
    (tmp_path / "runs" / "single_70" / "eval.json").unlink()
    (tmp_path / "runs" / "single_00" / "train_time.json").unlink()
    results = cmp.collect_results(tmp_path, runs, levels, {}, "cmd")
    assert results["rows"][2]["single_wer"] is None and results["rows"][2]["ratio"] is None
    assert results["goals"]["ratio_goal_met"] is None
    assert results["cpu"]["singles_cpu_s"] is None
    text = cmp.render_report(results)
    assert "| 2 | 0.70 | 23.0 | — | — | — |" in text
    assert "levels with a single model: 0, 1, 3; the others not run" in text


def test_unknown_stage_is_a_one_line_error(tmp_path, capsys):
    code = cmp.main(["--only", "prepare,bake", "--out_dir", str(tmp_path),
                     "--config", str(ROOT / "configs" / "tiny.yaml")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown stage(s) ['bake']" in err[0]


def test_report_stage_alone_writes_markdown_and_json(tmp_path, base_config):
    _write_fake_runs(tmp_path)
    report = tmp_path / "docs" / "results.md"
    code = cmp.main(["--only", "report", "--out_dir", str(tmp_path), "--an4", str(tmp_path / "none"),
                     "--config", str(base_config), "--report", str(report)])
    assert code == 0
    assert "## Dev WER per level" in report.read_text()
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["rows"][1]["dsnn_wer"] == 0.21
    assert data["setup"]["steps"] == 60


def test_narrow_runs_take_the_widths_each_unit_level_keeps(tmp_path):
    from dsnn_keras.config import apply_overrides, load_config

    config = load_config(ROOT / "configs" / "an4.yaml")
    widths = cmp.narrow_widths(config, cmp.DEFAULT_LEVELS)
    assert sorted(widths) == [0.5, 0.7, 0.9]
    lstm = [widths[s]["lstm_units"][0] for s in (0.5, 0.7, 0.9)]
    conv = [widths[s]["conv_channels"][0] for s in (0.5, 0.7, 0.9)]
    assert lstm == sorted(lstm, reverse=True) and 40 < lstm[-1] < lstm[0] < 160
    assert conv == sorted(conv, reverse=True) and conv[0] < 32
    runs = cmp.narrow_runs(widths, ["pruning.granularity=unit"])
    assert [r.name for r in runs] == ["narrow_50", "narrow_70", "narrow_90"]
    for run in runs:
        path = tmp_path / f"{run.name}.yaml"
        cmp.write_run_config(ROOT / "configs" / "an4.yaml", run.overrides, path)
        resolved = load_config(path)
        assert resolved.training.mode == "single" and resolved.effective_levels == (0.0,)
        assert list(resolved.model.lstm_units) == widths[run.sparsity]["lstm_units"]
        assert list(resolved.model.conv_channels) == widths[run.sparsity]["conv_channels"]
        assert resolved.training.total_steps == config.training.total_steps
