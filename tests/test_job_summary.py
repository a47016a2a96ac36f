"""dsnn_job.summary: the training log reader and the Markdown table."""
import json

from dsnn_job.summary import read_train_log, to_markdown


def test_train_log_keeps_the_last_entry_of_a_step_logged_twice_after_a_resume(tmp_path):
    log = tmp_path / "train_log.jsonl"
    events = [
        {"event": "start", "step": 0},
        {"event": "train", "step": 20, "learning_rate": 0.1, "loss": {"0": 9.0, "1": 9.5}},
        {"event": "train", "step": 40, "learning_rate": 0.1, "loss": {"0": 8.0, "1": 8.5}},
        {"event": "start", "step": 20, "resumed_from": 20},   # killed after step 40's log, resumed at 20
        {"event": "train", "step": 40, "learning_rate": 0.1, "loss": {"0": 7.0, "1": 7.5}},
        {"event": "dev", "step": 40, "levels": [{"level": 0, "wer": 0.5}, {"level": 1, "wer": 0.6}]},
    ]
    log.write_text("\n".join(json.dumps(e) for e in events) + "\n\n")
    parsed = read_train_log(log)
    assert parsed["train"] == [(20, 0.1, {0: 9.0, 1: 9.5}), (40, 0.1, {0: 7.0, 1: 7.5})]
    assert parsed["dev"] == [(40, [{"level": 0, "wer": 0.5}, {"level": 1, "wer": 0.6}])]


def test_markdown_table_shows_percentages_and_dashes_for_missing_figures():
    row = {"level": 0, "sparsity": 0.0, "nonzero_weights": 12345, "wer": 0.25, "cer": 0.125,
           "latency_ms_median": 3.5, "latency_vs_dense_single": 1.02, "rtf": 0.0012, "transcript": "yes"}
    summary = {"out_dir": "demo", "eval_utterances": 120, "eval_split": "test", "bench_utterances": 8,
               "bench_audio_seconds": 14.0, "latency_threads": 1,
               "model": {"size_bytes": 2_000_000, "size_vs_dense_single": None},
               "levels": [row, {**row, "level": 1, "sparsity": 0.9, "wer": None, "latency_ms_median": None}],
               "transcribed": {"audio": "a.flac", "reference": "yes"}}
    text = to_markdown(summary)
    assert "| 0 | 0.00 | 12,345 | 25.0 | 12.5 | 3.50 | 1.02 | 0.0012 | 'yes' |" in text
    assert "| 1 | 0.90 | 12,345 | – | 12.5 | – | 1.02 |" in text
    assert "–× the dense single-level file" in text


def _beam_summary(per_level_beams):
    row = {"level": 0, "sparsity": 0.0, "nonzero_weights": 100, "wer": 0.2, "cer": 0.1, "beam_wer": 0.1,
           "beam_cer": 0.05, "latency_ms_median": 3.0, "decoder_ms_median": 0.5, "latency_vs_dense_single": 1.0,
           "rtf": 0.001, "transcript": "yes", "beam_transcript": "yes"}
    rows = [{**row, "level": level, "sparsity": sparsity, "beam": beam}
            for level, (sparsity, beam) in enumerate(zip((0.0, 0.9), per_level_beams))]
    default = per_level_beams[0]
    return {"out_dir": "demo", "eval_utterances": 10, "eval_split": "test", "bench_utterances": 8,
            "bench_audio_seconds": 14.0, "latency_threads": 1, "model": {"size_bytes": 1_000_000,
                                                                       "size_vs_dense_single": 2.0},
            "levels": rows, "transcribed": {"audio": "a.flac", "reference": "yes"},
            "decoder": {**default, "lexicon": True, "tuned_on": "dev", "tuned_level": 0, "tuned_on_eval_split": False,
                        "per_level": per_level_beams[0] != per_level_beams[1]}}


def test_markdown_names_each_levels_beam_settings_when_they_were_tuned_per_level():
    dense = {"lm_weight": 1.5, "word_bonus": -1.0, "beam_width": 16}
    sparse = {"lm_weight": 0.75, "word_bonus": 0.0, "beam_width": 32}
    text = to_markdown(_beam_summary([dense, sparse]))
    assert "tuned on `dev` per level (level 0: 1.5 / -1 / 16; level 1: 0.75 / 0 / 32)" in text
    assert "at level 0" not in text


def test_markdown_names_one_setting_when_every_level_decodes_alike():
    dense = {"lm_weight": 1.5, "word_bonus": -1.0, "beam_width": 16}
    text = to_markdown(_beam_summary([dense, dense]))
    assert "(width 16)" in text and "LM weight 1.5 and word bonus -1 tuned on `dev` at level 0" in text
    assert "per level" not in text


def test_decoder_summary_says_per_level_only_when_some_level_decodes_otherwise():
    from dsnn_job.summary import _beam_summary, _decoder_summary
    from dsnn_keras.beam_search import BeamSearchConfig, DecoderSettings

    dense, sparse = BeamSearchConfig(lm_weight=1.5, word_bonus=-1.0), BeamSearchConfig(lm_weight=0.75)
    for level_beams, per_level in (({1: sparse}, True), ({1: dense}, False), (None, False)):
        settings = DecoderSettings(beam=dense, level_beams=level_beams, tuned={"split": "dev", "level": 0})
        rows = [{"level": level, "beam": _beam_summary(settings.beam_for(level))} for level in (0, 1)]
        summary = _decoder_summary(settings, "test", rows)
        assert summary["per_level"] is per_level
        assert (summary["lm_weight"], summary["tuned_on"], summary["tuned_on_eval_split"]) == (1.5, "dev", False)
