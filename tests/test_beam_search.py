"""The word LM (dsnn_keras.ngram_lm), the beam search (dsnn_keras.beam_search) and their trip through
the .tflite: ARPA normalisation and KenLM agreement, beam 1 = greedy on real log-probs, the LM fixing
a near-miss, hot words, incremental = whole decoding, the LM inside the file, dsnn-eval --tune."""
import dataclasses
import json
import math
import pathlib

import numpy as np
import pytest

import harness_tflite as h
from dsnn_keras.beam_search import (BeamDecoder, BeamSearchConfig, BeamSearchError, DecoderSettings,
                                    log_softmax, spell_with_pieces)
from dsnn_keras.decoding import greedy_ctc_decode
from dsnn_keras.ngram_lm import ArpaModel, LanguageModelError, LmBundle, build_lm, count_ngrams

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHARS = ["<unk>", "\u2581"] + list("abcdefghijklmnopqrstuvwxyz")
BLANK = len(CHARS)
SENTENCES = ["yes no", "yes no no", "stop go", "go stop go", "yes no stop", "no yes"] * 3


def char_spell(word):
    return ["\u2581", *word]


@pytest.fixture(scope="module")
def bundle():
    return build_lm(SENTENCES, 3, char_spell)


def frames(spec):
    """Log-probs from a list of {piece: prob} frames (rest of the mass on the blank)."""
    out = np.full([len(spec), BLANK + 1], 1e-6)
    for t, probs in enumerate(spec):
        for piece, p in probs.items():
            out[t, BLANK if piece == "_" else CHARS.index(piece)] = p
        out[t, BLANK] += max(0.0, 1.0 - out[t].sum())
    return np.log(out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def spoken(words, confusions=None):
    """Frames for ``words``: each piece then a blank; ``confusions[i]`` replaces frame i's distribution."""
    spec = []
    for word in words:
        for piece in char_spell(word):
            spec += [{piece: 0.9}, {"_": 0.9}]
    for i, probs in (confusions or {}).items():
        spec[i] = probs
    return frames(spec)


def test_every_conditional_distribution_of_the_arpa_model_sums_to_one(bundle):
    model = ArpaModel(bundle.arpa)
    predicted = [w for w in model.vocabulary if w != "<s>"]
    for history in [(), ("<s>",), ("yes",), ("<s>", "yes"), ("yes", "no"), ("stop", "go"), ("unseen",), ("go", "x")]:
        total = sum(10 ** model.log10_prob(history, word) for word in predicted)
        assert total == pytest.approx(1.0, abs=1e-5), history
    # Seen continuations beat unseen ones, and <unk> has a probability.
    assert model.log10_prob(("yes",), "no") > model.log10_prob(("yes",), "go") > model.log10_prob(("yes",), "<unk>")


def test_kenlm_loads_the_file_and_scores_as_the_arpa_rule(bundle):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    words = ["yes", "no", "stop", "go", "<unk>"]
    vocabulary = Dictionary()
    for word in words:
        vocabulary.add_entry(word)
    path = pathlib.Path(__import__("tempfile").mkdtemp()) / "words.arpa"
    path.write_text(bundle.arpa)
    kenlm = KenLM(str(path), vocabulary)
    model = ArpaModel(bundle.arpa)
    state = kenlm.start(False)
    history = ["<s>"]
    for word in ["yes", "no", "no", "stop", "go"]:
        state, score = kenlm.score(state, words.index(word))
        assert score == pytest.approx(model.log10_prob(history, word), abs=1e-4)
        history.append(word)
    _, end = kenlm.finish(state)
    assert end == pytest.approx(model.log10_prob(history, "</s>"), abs=1e-4)


def test_count_and_bundle_errors_are_named(tmp_path):
    with pytest.raises(LanguageModelError, match="order"):
        count_ngrams(["a"], 0)
    with pytest.raises(LanguageModelError, match="no training words"):
        build_lm(["", " "], 2, char_spell)
    with pytest.raises(LanguageModelError, match="not a gzip"):
        LmBundle.from_bytes(b"{}", "x.tflite: dsnn_lm")
    (tmp_path / "words.arpa").write_text("\\data\\\n")
    (tmp_path / "lexicon.txt").write_text("yes\n")
    with pytest.raises(LanguageModelError, match=r"lexicon.txt:1"):
        LmBundle.read_dir(tmp_path)
    with pytest.raises(BeamSearchError, match="unknown key"):
        BeamSearchConfig.from_dict({"beam_size": 3})
    with pytest.raises(BeamSearchError, match="beam_width"):
        BeamSearchConfig(beam_width=0)


def test_bundle_round_trips_through_bytes_and_a_directory(bundle, tmp_path):
    again = LmBundle.from_bytes(bundle.to_bytes())
    assert again.arpa == bundle.arpa and again.lexicon == bundle.lexicon
    assert bundle.lexicon["yes"] == ("\u2581", "y", "e", "s")
    bundle.write_dir(tmp_path / "lm")
    bundle.write_dir(tmp_path / "lm")   # replaces the old one
    assert LmBundle.read_dir(tmp_path / "lm").arpa == bundle.arpa
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm"]


def test_beam_width_one_without_lm_is_greedy_on_real_log_probs():
    """Log-probs of the exported tiny model (LiteRT), every level: beam 1 = the file's greedy tokens."""
    from tflite.runtime import Recognizer

    recognizer = Recognizer(h.exported("float"), decoder="greedy")
    decoder = BeamDecoder(h.PIECES, h.BLANK_ID, BeamSearchConfig(beam_width=1, token_beam=None, beam_threshold=1e9))
    checked = 0
    for level in range(recognizer.num_levels):
        for seed in range(3):
            result = recognizer.recognize(h.speechlike(1.5, seed), level=level)
            assert result.tokens, "the tiny model should emit tokens on speech-like audio"
            beam = decoder.decode(result.log_probs)
            assert beam.tokens == result.tokens
            assert beam.tokens == greedy_ctc_decode(result.log_probs[None], None, h.BLANK_ID)[0]
            checked += 1
    assert checked == 3 * recognizer.num_levels


def test_the_word_lm_fixes_a_near_miss_the_acoustics_prefer(bundle):
    # "yes ?o": the 'g' of "go" is a little likelier than the 'n' of "no"; the LM knows "yes no".
    log_probs = spoken(["yes", "no"], {10: {"g": 0.5, "n": 0.4}})
    greedy = greedy_ctc_decode(log_probs[None], None, BLANK)[0]
    assert "".join(CHARS[t] for t in greedy).replace("\u2581", " ").strip() == "yes go"
    without = BeamDecoder(CHARS, BLANK, BeamSearchConfig(beam_width=16, lm_weight=0.0), lm=bundle)
    assert without.decode(log_probs).text == "yes go"
    fused = BeamDecoder(CHARS, BLANK, BeamSearchConfig(beam_width=16, lm_weight=1.0), lm=bundle)
    assert fused.decode(log_probs).text == "yes no"


def test_a_one_piece_word_held_for_several_frames_is_read_once():
    # BPE spells a letter as one piece ("\u2581r"); the model holds it for several frames.
    pieces = ["<unk>", "\u2581r", "\u2581b"]
    blank = len(pieces)
    letters = build_lm(["r b", "b r", "r", "b", "r r b"], 2, lambda word: ["\u2581" + word])
    held = np.log(np.array([[0.02, 0.9, 0.04, 0.04]] * 3 + [[0.02, 0.04, 0.04, 0.9], [0.02, 0.04, 0.9, 0.04]],
                           dtype=np.float32))
    for lm_weight in (0.0, 1.0):
        decoder = BeamDecoder(pieces, blank, BeamSearchConfig(beam_width=8, lm_weight=lm_weight), lm=letters)
        assert decoder.decode(held).text == "r b"


def test_a_last_piece_held_for_several_frames_is_scored_as_that_piece(bundle):
    # "yes" with its "s" held for three frames: the best path reads s, s, s (not s and two blanks).
    spec = [{"\u2581": 0.9}, {"_": 0.9}, {"y": 0.9}, {"_": 0.9}, {"e": 0.9}, {"_": 0.9}] + [{"s": 0.9}] * 3 + [{"_": 0.9}]
    log_probs = frames(spec)
    decoder = BeamDecoder(CHARS, BLANK, BeamSearchConfig(beam_width=8, lm_weight=0.0), lm=bundle)
    result = decoder.decode(log_probs)
    assert result.text == "yes"
    assert result.score == pytest.approx(float(log_probs.max(axis=1).sum()), abs=1e-4)


def test_fresh_decoders_agree_where_ending_a_word_and_holding_its_last_piece_tie(bundle):
    # Every piece held for two frames; no LM weight and no word bonus, so ending a word on its last
    # piece's first frame and staying on the word's node score the same. flashlight orders tied
    # candidates by address, so without the tie-break fresh decoders (width 1) disagreed here.
    spec = []
    for word in ["yes", "no", "stop", "go"]:
        for piece in char_spell(word):
            spec += [{piece: 0.9}, {piece: 0.9}, {"_": 0.9}]
    log_probs = frames(spec)
    config = BeamSearchConfig(beam_width=1, lm_weight=0.0, word_bonus=0.0)
    results = set()
    for _ in range(12):
        result = BeamDecoder(CHARS, BLANK, config, lm=bundle).decode(log_probs)
        results.add((result.text, tuple(result.tokens), result.score))
    assert len(results) == 1 and results.pop()[0] == "yes no stop go"


def test_the_lexicon_keeps_out_words_it_does_not_know(bundle):
    # "mo" is no word: the lexicon decoder takes the lexicon word the frames allow next.
    log_probs = spoken(["yes", "mo"], {10: {"m": 0.6, "n": 0.3}})
    decoder = BeamDecoder(CHARS, BLANK, BeamSearchConfig(beam_width=16, lm_weight=0.5), lm=bundle)
    assert decoder.decode(log_probs).text == "yes no"
    free = BeamDecoder(CHARS, BLANK, BeamSearchConfig(beam_width=16, lexicon=False), lm=bundle)
    assert free.decode(log_probs).text == "yes mo"


def test_hot_words_change_a_decoding_they_should(bundle):
    # After "stop", "go" is what the LM expects; the acoustics say "no" a little more. Hot-wording
    # "stop no" turns it; hot-wording an unrelated phrase does not.
    log_probs = spoken(["stop", "no"], {12: {"n": 0.45, "g": 0.4}})
    config = BeamSearchConfig(beam_width=16, lm_weight=1.0)
    assert BeamDecoder(CHARS, BLANK, config, lm=bundle).decode(log_probs).text == "stop go"
    hot = BeamDecoder(CHARS, BLANK, config, lm=bundle, hotwords=["stop no"], hotword_weight=3.0)
    assert hot.decode(log_probs).text == "stop no"
    other = BeamDecoder(CHARS, BLANK, config, lm=bundle, hotwords=["yes yes"], hotword_weight=3.0)
    assert other.decode(log_probs).text == "stop go"
    # A hot word the lexicon lacks becomes spellable.
    new = spoken(["stop", "zap"])
    assert BeamDecoder(CHARS, BLANK, config, lm=bundle).decode(new).text != "stop zap"
    assert BeamDecoder(CHARS, BLANK, config, lm=bundle, hotwords="zap", hotword_weight=3.0).decode(new).text == "stop zap"
    with pytest.raises(BeamSearchError, match="need the lexicon decoder"):
        BeamDecoder(CHARS, BLANK, config, lm=None, hotwords=["zap"], hotword_weight=1.0)
    assert spell_with_pieces("zap", CHARS) == ("\u2581", "z", "a", "p")


def test_incremental_decoding_equals_the_whole_utterance(bundle):
    rng = np.random.default_rng(0)
    clean = spoken(["yes", "no", "stop", "go"])
    log_probs = log_softmax(clean + rng.normal(0, 1.0, clean.shape))
    decoder = BeamDecoder(CHARS, BLANK, BeamSearchConfig(beam_width=8, lm_weight=0.7, word_bonus=0.5), lm=bundle)
    whole = decoder.decode(log_probs)
    stream = decoder.stream()
    for start in range(0, len(log_probs), 5):
        stream.accept(log_probs[start:start + 5])
        stream.partial()
    final = stream.finish()
    assert (final.text, final.tokens) == (whole.text, whole.tokens)
    assert final.score == pytest.approx(whole.score, abs=1e-4)


def _padded_with_blank_runs(words, run=6):
    """``spoken(words)`` with every blank frame stretched into ``run`` surely-blank frames."""
    spec = []
    for word in words:
        for piece in char_spell(word):
            spec += [{piece: 0.9}] + [{"_": 0.9999}] * run
    return frames(spec)


def test_blank_skip_searches_one_frame_of_each_surely_blank_run_and_keeps_the_result(bundle):
    log_probs = _padded_with_blank_runs(["yes", "no", "stop", "go", "no"])
    exact = BeamDecoder(CHARS, BLANK, BeamSearchConfig(beam_width=8, lm_weight=0.7), lm=bundle)
    skipping = exact.with_config(blank_skip=0.99)
    kept, last = skipping._skip_blanks(log_probs)   # pylint: disable=protected-access
    letters = sum(len(char_spell(w)) for w in ["yes", "no", "stop", "go", "no"])
    assert kept.shape == (2 * letters, BLANK + 1) and last   # one blank frame per run is left
    assert skipping.decode(log_probs).text == exact.decode(log_probs).text == "yes no stop go no"
    # Repeated letters stay apart: the run's first blank is kept (lexicon-free, no LM: tokens as heard).
    doubled = _padded_with_blank_runs(["aab"])
    free = BeamDecoder(CHARS, BLANK, BeamSearchConfig(beam_width=4, lexicon=False, blank_skip=0.99))
    assert [CHARS[t] for t in free.decode(doubled).tokens] == ["\u2581", "a", "a", "b"]
    # Streaming: a run split across chunks is still searched once, and the result equals the whole.
    stream = skipping.stream()
    for start in range(0, len(log_probs), 4):
        stream.accept(log_probs[start:start + 4])
    assert stream.frames == kept.shape[0]
    final, whole = stream.finish(), skipping.decode(log_probs)
    assert (final.text, final.tokens) == (whole.text, whole.tokens)


@pytest.mark.parametrize("field, bad_values, good", [
    ("blank_skip", (0.0, 0.3, 0.5, 1.0, 1.5, float("nan"), "0.9"), 0.99),
    ("token_min_logp", (0.0, 0.5, float("nan"), float("-inf"), "-5", True), -5.0)])
def test_a_pruning_option_is_validated_and_old_settings_read_without_it(field, bad_values, good):
    for bad in bad_values:
        with pytest.raises(BeamSearchError, match=field):
            BeamSearchConfig(**{field: bad})
    old = {"beam_width": 16, "lm_weight": 0.5, "word_bonus": 0.0, "token_beam": 8, "beam_threshold": 25.0,
           "lexicon": True}
    assert getattr(BeamSearchConfig.from_dict(old), field) is None
    assert BeamSearchConfig.from_dict(old).to_dict() == old   # off: the field is left out
    assert getattr(BeamSearchConfig.from_dict({**old, field: good}), field) == good
    assert BeamSearchConfig.from_dict({**old, field: good}).to_dict() == {**old, field: good}


def test_a_token_floor_drops_tokens_less_likely_than_it_but_never_the_blank_or_the_best(bundle):
    # "yes ?o" with the "n" of "no" at 0.4 % (log -5.5): the LM (weight 2) still finds "yes no"; a
    # floor of -5 takes the "n" out of that frame, so the search can only read "go".
    log_probs = spoken(["yes", "no"], {10: {"g": 0.9, "n": 0.004}})
    config = BeamSearchConfig(beam_width=16, lm_weight=2.0)
    assert BeamDecoder(CHARS, BLANK, config, lm=bundle).decode(log_probs).text == "yes no"
    floored = BeamDecoder(CHARS, BLANK, dataclasses.replace(config, token_min_logp=-5.0), lm=bundle)
    assert floored.decode(log_probs).text == "yes go"
    assert BeamDecoder(CHARS, BLANK, dataclasses.replace(config, token_min_logp=-6.0),
                       lm=bundle).decode(log_probs).text == "yes no"
    # A frame whose likeliest token and blank are both below the floor keeps both.
    flat = np.log(np.full([3, BLANK + 1], 1.0 / (BLANK + 1), dtype=np.float32))
    flat[1, 5] += 0.5
    high = BeamDecoder(CHARS, BLANK, dataclasses.replace(config, token_min_logp=-1.0), lm=bundle)
    pruned = high._prune_tokens(flat)   # pylint: disable=protected-access
    assert pruned[1, 5] == flat[1, 5] and (pruned[:, BLANK] == flat[:, BLANK]).all()
    assert (pruned[1, :5] < -1e29).all() and (pruned[0, 1:BLANK] < -1e29).all()   # frame 0: a tie, 0 kept
    # Streaming prunes the same frames: its result equals the whole utterance's (on frames where
    # the floor changes the result).
    clean = spoken(["stop", "go", "no"])
    noisy = log_softmax(clean + np.random.default_rng(6).normal(0, 2.5, clean.shape))
    given = noisy.copy()
    assert floored.decode(noisy).text != BeamDecoder(CHARS, BLANK, config, lm=bundle).decode(noisy).text
    stream = floored.stream()
    for start in range(0, len(noisy), 4):
        stream.accept(noisy[start:start + 4])
    final, whole = stream.finish(), floored.decode(noisy)
    assert (final.text, final.tokens) == (whole.text, whole.tokens)
    # The caller's log-probs are left as they were (the floor works on a copy).
    assert np.array_equal(noisy, given)


def test_the_lm_travels_inside_the_tflite_and_the_recognizer_decodes_with_it(tmp_path):
    """LM + lexicon + tuned weights embedded as the export does; Recognizer(decoder='auto') uses them."""
    from tflite import metadata as metadata_lib
    from tflite.flatbuffer import metadata_names
    from tflite.runtime import Recognizer

    words = {"a": ("\u2581a",), "bc": ("\u2581b", "c"), "de": ("\u2581d", "e"), "fg": ("\u2581f", "g"),
             "hi": ("\u2581h", "i")}
    lm = build_lm(["a bc", "de fg hi", "a a hi"] * 2, 2, lambda w: words[w])
    settings = DecoderSettings(beam=BeamSearchConfig(beam_width=4, lm_weight=0.3, word_bonus=1.5),
                               tuned={"split": "dev", "level": 0, "best_wer": 0.1, "greedy_wer": 0.2, "grid": []})
    data = h.exported("float").read_bytes()
    raw = metadata_lib.parse(data).raw
    path = tmp_path / "with_lm.tflite"
    path.write_bytes(metadata_lib.embed_decoder(data, raw, settings, lm))
    assert metadata_lib.LM_METADATA_NAME in metadata_names(path.read_bytes())
    meta = metadata_lib.read_metadata(path)
    assert meta.decoder["default"] == "beam" and meta.decoder["lm_order"] == 2
    assert metadata_lib.undocumented_keys(meta.raw) == []
    carried = metadata_lib.read_lm(path.read_bytes(), meta)
    assert carried.arpa == lm.arpa and carried.lexicon == lm.lexicon

    recognizer = Recognizer(path)
    assert recognizer.decoder == "beam" and recognizer.beam.config == settings.beam
    audio = h.speechlike(1.5, 1)
    result = recognizer.recognize(audio, level=1)
    expected = BeamDecoder(h.PIECES, h.BLANK_ID, settings.beam, lm=lm).decode(result.log_probs)
    assert result.text == expected.text and result.tokens == expected.tokens
    assert set(result.text.split()) <= set(words)
    assert Recognizer(path, decoder="greedy").recognize(audio, level=1).tokens == \
        greedy_ctc_decode(result.log_probs[None], None, h.BLANK_ID)[0]
    # A file without a decoder entry stays greedy under "auto".
    assert Recognizer(h.exported("float")).decoder == "greedy"


def test_decoder_settings_keep_per_level_settings_and_refuse_bad_ones(tmp_path):
    dense, sparse = BeamSearchConfig(lm_weight=1.5, token_beam=4), BeamSearchConfig(lm_weight=0.75, blank_skip=0.99)
    settings = DecoderSettings(beam=dense, level_beams={0: dense, 3: sparse})
    assert settings.beam_for(3) == sparse and settings.beam_for(2) == dense and settings.beam_for(0) == dense
    settings.write(tmp_path)
    assert DecoderSettings.read(tmp_path) == settings
    assert json.loads((tmp_path / "decoder.json").read_text())["levels"]["3"]["lm_weight"] == 0.75
    DecoderSettings(beam=dense).write(tmp_path)   # not per level: the key is left out (older readers)
    assert "levels" not in json.loads((tmp_path / "decoder.json").read_text())
    assert DecoderSettings.read(tmp_path).level_beams is None
    with pytest.raises(BeamSearchError, match="lexicon False differs"):
        DecoderSettings(beam=dense, level_beams={1: BeamSearchConfig(lexicon=False)})
    for levels, message in (({"x": {}}, "key 'x' is not a level index"), ([1], "must be an object"),
                            ({"03": {}}, "key '03' is not a level index"), ({"\u00b3": {}}, "is not a level index"),
                            ({"2": {"lm_weight": -1}}, "levels: 2: lm_weight must be >= 0"),
                            ({"1": {"lexicon": False}}, "lexicon False differs")):
        (tmp_path / "decoder.json").write_text(json.dumps({**settings.to_dict(), "levels": levels}))
        with pytest.raises(BeamSearchError, match=message) as error:
            DecoderSettings.read(tmp_path)
        assert str(tmp_path / "decoder.json") in str(error.value)


def test_a_file_tuned_per_level_decodes_each_level_with_its_own_settings(tmp_path):
    from tflite import metadata as metadata_lib
    from tflite.metadata import MetadataError
    from tflite.runtime import Recognizer

    words = {"a": ("\u2581a",), "bc": ("\u2581b", "c"), "de": ("\u2581d", "e")}
    lm = build_lm(["a bc", "de a", "a a de"] * 2, 2, lambda w: words[w])
    dense = BeamSearchConfig(beam_width=4, lm_weight=0.3, word_bonus=5.0)   # words are cheap
    sparse = BeamSearchConfig(beam_width=2, lm_weight=0.0, word_bonus=-50.0, blank_skip=0.9)   # words are dear
    settings = DecoderSettings(beam=dense, level_beams={0: dense, 2: sparse},
                               tuned={"split": "dev", "level": 0, "best_wer": 0.1, "greedy_wer": 0.2,
                                      "levels": [{"level": 0, "best_wer": 0.1, "greedy_wer": 0.2, "grid": []},
                                                 {"level": 2, "best_wer": 0.3, "greedy_wer": 0.4, "grid": []}]})
    data = h.exported("float").read_bytes()
    raw = metadata_lib.parse(data).raw
    path = tmp_path / "per_level.tflite"
    path.write_bytes(metadata_lib.embed_decoder(data, raw, settings, lm))
    meta = metadata_lib.read_metadata(path)
    assert meta.decoder["levels"] == {"2": sparse.to_dict()}   # only the levels that differ from "beam"
    assert [entry["level"] for entry in meta.decoder["tuned"]["levels"]] == [0, 2]
    assert metadata_lib.undocumented_keys(meta.raw) == []

    recognizer = Recognizer(path)
    assert recognizer.beam_for(2).config == sparse
    assert recognizer.beam_for(0).config == recognizer.beam_for(1).config == dense
    audio = h.speechlike(1.5, 1)
    for level, config, other in ((1, dense, sparse), (2, sparse, dense)):
        result = recognizer.recognize(audio, level=level)
        expected = BeamDecoder(h.PIECES, h.BLANK_ID, config, lm=lm).decode(result.log_probs)
        # The text, not the path: at level 2 this untrained model's outputs for "\u2581b" and the blank
        # are equal at every frame (both units pruned away, zero biases), and flashlight orders
        # exactly tied candidates by address, so which of two word-less paths survives may differ.
        assert result.text == expected.text
        # The two settings decode these log-probs differently, so the equality above tells them apart.
        assert BeamDecoder(h.PIECES, h.BLANK_ID, other, lm=lm).decode(result.log_probs).text != result.text
    # Hot words need an LM weight > 0 at every level: the level that has 0 is named.
    with pytest.raises(Exception, match="level 2's decoder settings: hot words need lm_weight > 0"):
        Recognizer(path, hotwords=["a bc"], hotword_weight=1.0)
    # A caller's override applies at every level; a bad one is named.
    widened = Recognizer(path, beam={"beam_width": 16})
    assert widened.beam_for(2).config.beam_width == widened.beam_for(0).config.beam_width == 16
    assert widened.beam_for(2).config.word_bonus == -50.0   # the rest stays the level's own
    # A level the file does not have is refused in the metadata and by beam_for.
    raw["decoder"]["levels"] = {str(len(raw["levels"])): sparse.to_dict()}
    with pytest.raises(MetadataError, match="decoder.levels must be an object of level index"):
        metadata_lib.encode(raw)
    with pytest.raises(Exception, match="out of range"):
        recognizer.beam_for(len(raw["levels"]))


def test_transcribe_decodes_with_the_beam_decoder(tmp_path, capsys):
    import soundfile

    from tflite.cli import transcribe_main

    wav = tmp_path / "utt.wav"
    soundfile.write(wav, h.speechlike(1.0, 2), 16000)
    assert transcribe_main([str(h.exported("float")), str(wav), "--decoder", "beam", "--beam_width", "1"]) == 0
    beam_line = capsys.readouterr().out
    assert transcribe_main([str(h.exported("float")), str(wav), "--decoder", "greedy"]) == 0
    assert capsys.readouterr().out == beam_line   # beam 1, no LM = greedy
    assert transcribe_main([str(h.exported("float")), str(wav), "--hotwords", "a"]) == 1
    assert "need decoder='beam'" in capsys.readouterr().err   # a file without LM decodes greedily
    assert transcribe_main([str(h.exported("float")), str(wav), "--decoder", "beam", "--hotwords", "a"]) == 1
    assert "need the lexicon decoder" in capsys.readouterr().err


@pytest.mark.large
def _untrained_run(tmp_path):
    """A prepared dataset with a 2-gram LM and a run directory (tiny model, masks at the last level)."""
    import shutil

    import tensorflow as tf
    from fixtures_data import build_prepared_dataset

    import dsnn_keras
    from dsnn_keras.config import dump_config, load_config
    from dsnn_keras.dataset import PreparedDataset
    from dsnn_keras.model import build_pruned_model
    from dsnn_keras.ngram_lm import build_dataset_lm

    data = build_prepared_dataset(tmp_path / "data", num_train=8, num_dev=4)
    build_dataset_lm(data, order=2)
    dataset = PreparedDataset.from_dir(data)
    config = load_config(ROOT / "configs" / "tiny.yaml")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / "config.yaml")
    for name in ("dataset.json", "tokenizer.model", "cmvn.json"):
        shutil.copy(data / name, run_dir / name)
    model = build_pruned_model(config, dataset.feature_config, dataset.vocab_size, dataset.cmvn_mean, dataset.cmvn_std)
    step = tf.Variable(config.pruning.end_step, dtype=tf.int64)
    dsnn_keras.update_nested_masks(model, step)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model, step=step), str(run_dir / "checkpoints"), 1).save(
        checkpoint_number=int(step.numpy()))
    return run_dir, data


# One value per speed flag (the width: the starting one, 4) turns --tune's speed stage off. Which
# pruning decodes an untrained model fastest is timing noise (a wider beam won once on a loaded
# machine); tests that assert the width use this, the rule has its own tests.
NO_SPEED_STAGE = ("--tune_beam_widths", "4", "--tune_beam_thresholds", "25", "--tune_token_beams", "8",
                  "--tune_blank_skips", "none", "--tune_token_min_logps", "none")


def test_tune_writes_the_best_weights_into_the_run_and_eval_uses_them(tmp_path):
    from dsnn_keras.evaluate import main

    run_dir, data = _untrained_run(tmp_path)
    # The evaluation after tuning runs without decoder flags: it takes the run's decoder.json.
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_lm_weights", "0,1.5",
                 "--tune_word_bonuses", "0,2", "--levels", "0", "--beam_width", "4", *NO_SPEED_STAGE]) == 0
    settings = DecoderSettings.read(run_dir)
    grid = settings.tuned["grid"]
    assert len(grid) == 4 and {(g["lm_weight"], g["word_bonus"]) for g in grid} == {(0, 0), (0, 2), (1.5, 0), (1.5, 2)}
    best = min(g["wer"] for g in grid)
    assert settings.tuned["best_wer"] == best
    assert (settings.beam.lm_weight, settings.beam.word_bonus) in {(g["lm_weight"], g["word_bonus"]) for g in grid
                                                                  if g["wer"] == best}
    assert settings.beam.beam_width == 4
    # The default tunes every level on its own; the densest one's settings are the default.
    assert sorted(settings.level_beams) == [0, 1, 2, 3] and settings.beam == settings.level_beams[0]
    assert [entry["level"] for entry in settings.tuned["levels"]] == [0, 1, 2, 3]
    for entry in settings.tuned["levels"]:
        chosen = settings.level_beams[entry["level"]]
        assert entry["best_wer"] == min(g["wer"] for g in entry["grid"]) and chosen.beam_width == 4
        assert (chosen.lm_weight, chosen.word_bonus) in {(g["lm_weight"], g["word_bonus"]) for g in entry["grid"]
                                                         if g["wer"] == entry["best_wer"]}
    assert LmBundle.read_dir(run_dir / "lm").arpa == LmBundle.read_dir(data / "lm").arpa
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["decoder"] == "beam" and report["decoder_config"]["beam"] == settings.beam.to_dict()
    assert report["levels"][0]["decoder_seconds"] > 0
    command = report["created_by"]["command"]
    assert command[command.index("--beam_width") + 1] == "4" and "--lm_weight" not in command


def test_tune_with_a_decoder_dir_leaves_the_run_untouched_and_eval_and_export_read_it(tmp_path):
    from dsnn_keras.evaluate import main
    from tflite.export import ExportError, export_run

    run_dir, data = _untrained_run(tmp_path)
    before = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    decoder_dir = tmp_path / "decoder"
    assert main([str(run_dir), "--data", str(data), "--tune", "--decoder_dir", str(decoder_dir), "--levels", "0",
                 "--tune_lm_weights", "0,1", "--tune_word_bonuses", "0", "--beam_width", "4",
                 *NO_SPEED_STAGE, "--out", str(tmp_path / "tuned.json")]) == 0
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == before   # the run: as it was
    settings = DecoderSettings.read(decoder_dir)
    assert settings.beam.beam_width == 4 and len(settings.tuned["grid"]) == 2
    assert "speakers" not in settings.tuned and settings.tuned["num_utterances"] == 4
    assert LmBundle.read_dir(decoder_dir / "lm").arpa == LmBundle.read_dir(data / "lm").arpa
    tuned = json.loads((tmp_path / "tuned.json").read_text())
    assert tuned["decoder"] == "beam" and tuned["decoder_config"]["lm"] == str(decoder_dir / "lm")
    # Later evaluations find the decoder only where they are told to look.
    assert main([str(run_dir), "--data", str(data), "--levels", "0", "--out", str(tmp_path / "plain.json")]) == 0
    assert json.loads((tmp_path / "plain.json").read_text())["decoder"] == "greedy_ctc"
    assert main([str(run_dir), "--data", str(data), "--levels", "0", "--decoder_dir", str(decoder_dir),
                 "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["decoder_config"]["beam"] == settings.beam.to_dict()
    assert [level["wer"] for level in again["levels"]] == [level["wer"] for level in tuned["levels"]]
    assert main([str(run_dir), "--data", str(data), "--decoder_dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "none.json")]) == 1   # a decoder_dir without decoder.json: an error
    assert not (tmp_path / "none.json").exists()
    # Tuning again into the same directory starts from its settings (beam width 4 kept).
    assert main([str(run_dir), "--data", str(data), "--tune", "--decoder_dir", str(decoder_dir), "--levels", "0",
                 "--tune_lm_weights", "0.5", "--tune_word_bonuses", "1", *NO_SPEED_STAGE,
                 "--out", str(tmp_path / "retuned.json")]) == 0
    retuned = DecoderSettings.read(decoder_dir)
    assert (retuned.beam.beam_width, retuned.beam.lm_weight, retuned.beam.word_bonus) == (4, 0.5, 1.0)
    with pytest.raises(ExportError, match="--decoder_dir .*empty: no decoder.json there"):
        export_run(run_dir, tmp_path / "model.tflite", decoder_dir=tmp_path / "empty")
    assert not (tmp_path / "model.tflite").exists()


@pytest.mark.large
def test_eval_and_export_decode_each_level_with_its_own_settings(tmp_path):
    from dsnn_keras.evaluate import EvaluationError, output_paths, run_evaluation
    from tflite.export import ExportError, ExportOptions, export_run
    from tflite.metadata import read_metadata

    run_dir, data = _untrained_run(tmp_path)
    LmBundle.read_dir(data / "lm").write_dir(run_dir / "lm")
    dense = BeamSearchConfig(beam_width=4, lm_weight=0.0, word_bonus=5.0)   # words are cheap
    sparse = BeamSearchConfig(beam_width=4, lm_weight=0.0, word_bonus=-50.0)   # words are dear
    DecoderSettings(beam=dense, level_beams={1: sparse}).write(run_dir)
    out = tmp_path / "eval.json"
    report = run_evaluation(run_dir, data, levels="0,1", out=out).to_dict()
    assert report["decoder_config"]["beam"] == dense.to_dict()
    assert report["decoder_config"]["levels"] == {"1": sparse.to_dict()}
    hypotheses = [json.loads(line)["hypotheses"] for line in
                  pathlib.Path(output_paths(run_dir, out)["hypotheses"]).read_text().splitlines()]
    words = {level: sum(len(h[level].split()) for h in hypotheses) for level in ("0", "1")}
    assert words["1"] < words["0"], words   # level 1 decoded with its own (word-averse) settings
    model = tmp_path / "model.tflite"
    export_run(run_dir, model, options=ExportOptions(measure_latency=False, verify=False))
    assert read_metadata(model).decoder["levels"] == {"1": sparse.to_dict()}
    DecoderSettings(beam=dense, level_beams={7: sparse}).write(run_dir)   # tuned on another run
    with pytest.raises(ExportError, match=r"settings for level\(s\) \[7\], but the run has levels 0..3"):
        export_run(run_dir, tmp_path / "other.tflite", options=ExportOptions(measure_latency=False))
    assert not (tmp_path / "other.tflite").exists()
    with pytest.raises(EvaluationError, match=r"decoder.json: settings for level\(s\) \[7\]"):
        run_evaluation(run_dir, data, levels="0", out=tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


@pytest.mark.large
def test_tune_on_some_speakers_records_them_and_decodes_only_theirs(tmp_path):
    from dsnn_keras.evaluate import main

    run_dir, data = _untrained_run(tmp_path)
    decoder_dir = tmp_path / "decoder"
    assert main([str(run_dir), "--data", str(data), "--tune", "--decoder_dir", str(decoder_dir), "--levels", "0",
                 "--tune_lm_weights", "0", "--tune_word_bonuses", "0", "--beam_width", "4", *NO_SPEED_STAGE,
                 "--speakers", "spk1,spk3", "--out", str(tmp_path / "tuned.json")]) == 0
    settings = DecoderSettings.read(decoder_dir)
    assert settings.tuned["speakers"] == ["spk1", "spk3"] and settings.tuned["num_utterances"] == 2
    assert json.loads((tmp_path / "tuned.json").read_text())["num_utterances"] == 2


@pytest.mark.large
def test_retuning_some_levels_keeps_the_other_levels_settings(tmp_path):
    from dsnn_keras.evaluate import tune_decoder

    run_dir, data = _untrained_run(tmp_path)
    quick = dict(beam_thresholds=(25.0,), token_beams=(8,), blank_skips=(None,), token_min_logps=(None,))
    tune_decoder(run_dir, data, level="all", lm_weights=(0.0, 1.0), word_bonuses=(0.0,), **quick)
    first = DecoderSettings.read(run_dir)
    tune_decoder(run_dir, data, level=3, lm_weights=(2.0,), word_bonuses=(-1.0,), **quick)
    again = DecoderSettings.read(run_dir)
    assert (again.beam_for(3).lm_weight, again.beam_for(3).word_bonus) == (2.0, -1.0)
    assert [again.beam_for(level) for level in range(3)] == [first.beam_for(level) for level in range(3)]
    assert again.beam == first.beam_for(0) and again.tuned["kept_levels"] == [0, 1, 2]


@pytest.mark.large
def test_export_carries_the_runs_tuned_decoder_and_the_stream_decodes_with_it(tmp_path):
    """dsnn-export's path (export_run) with RUN/decoder.json + RUN/lm; the live stream's final text is
    the whole-utterance beam search's."""
    import sentencepiece as spm

    from tflite.export import ExportOptions, export_run
    from tflite.runtime import Recognizer

    import tf_keras as keras

    # The run's weights are random: seeded here so the whole-utterance text (which must not be
    # empty, or the stream comparison below would be vacuous) does not depend on which tests ran
    # before in this process (it came out empty once under pytest-xdist).
    keras.utils.set_random_seed(7)
    run = h.write_run_dir(tmp_path / "run", conv_padding="causal")
    tokenizer = spm.SentencePieceProcessor(model_file=str(run / "tokenizer.model"))
    lm = build_lm(["yes no", "go stop", "left right", "up down", "on off", "yes go"] * 3, 2,
                  lambda word: tokenizer.encode(word, out_type=str))
    lm.write_dir(run / "lm")
    level_1 = BeamSearchConfig(beam_width=6, lm_weight=1.0, word_bonus=2.5, blank_skip=0.95)
    DecoderSettings(beam=BeamSearchConfig(beam_width=8, lm_weight=0.5, word_bonus=2.0),
                    level_beams={1: level_1}).write(run)
    out = tmp_path / "model.tflite"
    report = export_run(run, out, options=ExportOptions(stream="on", measure_latency=False))
    assert report.metadata["decoder"]["lexicon_words"] == len(lm.lexicon)
    recognizer = Recognizer(out)
    assert recognizer.decoder == "beam" and recognizer.beam.config.beam_width == 8
    assert recognizer.beam_for(1).config == level_1   # the stream below starts at level 1: its settings
    audio = h.speechlike(2.0, 3)
    whole = recognizer.recognize(audio, level=1)
    assert whole.text and set(whole.text.split()) <= set(lm.lexicon)
    stream = recognizer.stream(level=1)
    for start in range(0, len(audio), 2560):
        stream.accept(audio[start:start + 2560])
    assert stream.finish() == whole.text and stream.tokens == whole.tokens


def test_tune_keeps_the_fastest_pruning_that_costs_no_wer_and_eval_uses_it(tmp_path):
    from dsnn_keras.evaluate import DEFAULT_TUNE_BLANK_SKIPS, DEFAULT_TUNE_TOKEN_MIN_LOGPS, main, tune_decoder

    run_dir, data = _untrained_run(tmp_path)
    result = tune_decoder(run_dir, data, lm_weights=(0.0, 1.0), word_bonuses=(0.0,),
                          beam_thresholds=(25.0, 5.0), token_beams=(8, 2), beam_widths=(4,),
                          out_dir=tmp_path / "decoder", speed_search="grid")
    speed_grid = result["speed_grid"]
    keys = ("beam_width", "beam_threshold", "token_beam", "blank_skip", "token_min_logp")
    assert len(speed_grid) == 2 * 2 * 2 * len(DEFAULT_TUNE_BLANK_SKIPS) * len(DEFAULT_TUNE_TOKEN_MIN_LOGPS)
    assert {tuple(g[key] for key in keys) for g in speed_grid} == {
        (w, t, k, p, f) for w in (32, 4) for t in (25.0, 5.0) for k in (8, 2) for p in DEFAULT_TUNE_BLANK_SKIPS
        for f in DEFAULT_TUNE_TOKEN_MIN_LOGPS}
    assert all(g["decoder_seconds"] > 0 for g in speed_grid)
    settings = DecoderSettings.read(tmp_path / "decoder")
    chosen = tuple(getattr(settings.beam, key) for key in keys)
    admissible = [g for g in speed_grid if g["wer"] <= result["best"]["wer"]]
    assert chosen in {tuple(g[key] for key in keys) for g in admissible}
    assert result["speed"]["decoder_seconds"] == min(g["decoder_seconds"] for g in admissible)
    assert settings.tuned["speed_grid"] == speed_grid and settings.tuned["speed_search"] == "grid"
    # The evaluation after tuning decodes with the chosen pruning.
    assert main([str(run_dir), "--data", str(data), "--decoder_dir", str(tmp_path / "decoder"), "--levels", "0",
                 "--out", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    beam = report["decoder_config"]["beam"]
    assert tuple(beam.get(key) for key in keys) == chosen


def test_coordinate_tune_measures_part_of_the_grid_from_the_start_setting_and_keeps_its_fastest(tmp_path):
    from dsnn_keras.evaluate import DEFAULT_TUNE_BLANK_SKIPS, DEFAULT_TUNE_TOKEN_MIN_LOGPS, tune_decoder

    run_dir, data = _untrained_run(tmp_path)
    result = tune_decoder(run_dir, data, level=0, lm_weights=(1.0,), word_bonuses=(0.0,),
                          beam_thresholds=(25.0, 5.0), token_beams=(8, 2), beam_widths=(4,),
                          out_dir=tmp_path / "decoder")   # speed_search: "coordinate", the default
    keys = ("beam_width", "beam_threshold", "token_beam", "blank_skip", "token_min_logp")
    full = {(w, t, k, p, f) for w in (32, 4) for t in (25.0, 5.0) for k in (8, 2) for p in DEFAULT_TUNE_BLANK_SKIPS
            for f in DEFAULT_TUNE_TOKEN_MIN_LOGPS}
    measured = [tuple(g[key] for key in keys) for g in result["speed_grid"]]
    assert measured[0] == (32, 25.0, 8, None, None)   # stage 1's own setting first
    assert len(set(measured)) == len(measured) and set(measured) <= full
    assert len(measured) < len(full) // 2
    admissible = [g for g in result["speed_grid"] if g["wer"] <= result["best"]["wer"] + 1e-12]
    assert result["speed"]["decoder_seconds"] == min(g["decoder_seconds"] for g in admissible)
    # An admissible setting is timed 3 times (best of), one above the WER once.
    assert all(g["timing_passes"] == (3 if g in admissible else 1) for g in result["speed_grid"])
    settings = DecoderSettings.read(tmp_path / "decoder")
    assert settings.tuned["speed_search"] == "coordinate"
    assert tuple(getattr(settings.beam, key) for key in keys) == tuple(result["speed"][key] for key in keys)


def test_re_tuning_settings_with_every_token_tried_walks_the_given_token_beams(tmp_path):
    from dsnn_keras.evaluate import tune_decoder

    run_dir, data = _untrained_run(tmp_path)
    # A decoder.json whose search tries every token (token_beam null) is where the re-tune starts.
    DecoderSettings(beam=BeamSearchConfig(beam_width=8, token_beam=None)).write(tmp_path / "decoder")
    result = tune_decoder(run_dir, data, level=0, lm_weights=(1.0,), word_bonuses=(0.0,), beam_widths=(4,),
                          beam_thresholds=(25.0,), token_beams=(8, 2), blank_skips=(None,), token_min_logps=(None,),
                          out_dir=tmp_path / "decoder", speed_wer_slack=0.99)   # every setting admissible
    assert {(g["beam_width"], g["token_beam"]) for g in result["speed_grid"]} <= {(8, 8), (8, 2), (4, 8), (4, 2)}
    assert result["speed"]["token_beam"] in (8, 2)


def test_the_speed_rule_counts_every_token_tried_as_the_widest_token_beam():
    from dsnn_keras.evaluate import fastest_admissible

    every, eight = _speed_setting(token_beam=None), _speed_setting(token_beam=8)
    grid = [{**eight, "wer": 0.1, "decoder_seconds": 0.2}, {**every, "wer": 0.1, "decoder_seconds": 0.2}]
    assert fastest_admissible(grid, 0.1)["token_beam"] is None   # equal time: the wider search


def test_the_coordinate_walk_starts_inside_the_given_values():
    from dsnn_keras.evaluate import coordinate_speed_search

    values = {**_SPEED_VALUES, "beam_threshold": [12.0], "token_beam": [3]}
    measured = coordinate_speed_search(values, _speed_setting(), lambda s: {**s, "wer": 0.1, "decoder_seconds": 1.0},
                                       best_wer=0.1)
    assert measured[0]["beam_threshold"] == 12.0 and measured[0]["token_beam"] == 3
    assert all(g["beam_threshold"] == 12.0 and g["token_beam"] == 3 for g in measured)


def _speed_setting(width=32, threshold=25.0, token_beam=8, skip=None, floor=None):
    return {"beam_width": width, "beam_threshold": threshold, "token_beam": token_beam, "blank_skip": skip,
            "token_min_logp": floor}


_SPEED_VALUES = {"beam_width": [32, 16, 8], "beam_threshold": [25.0, 15.0, 10.0], "token_beam": [8, 4],
                 "blank_skip": [None, 0.99, 0.9], "token_min_logp": [None, -8.0, -6.0]}


def test_the_coordinate_speed_search_finds_a_separable_optimum_measuring_each_setting_once():
    from dsnn_keras.evaluate import coordinate_speed_search, fastest_admissible

    calls = []

    def measure(setting):   # each knob's pruning saves time on its own; width 8 and floor -6 lose words
        calls.append(tuple(setting.values()))
        seconds = (setting["beam_width"] / 32 + setting["beam_threshold"] / 25 + setting["token_beam"] / 8
                   + (0.5 if setting["blank_skip"] is None else 1 - setting["blank_skip"])
                   + (0.5 if setting["token_min_logp"] is None else 0.05 * -setting["token_min_logp"]))
        wer = 0.10 + 0.02 * (setting["beam_width"] == 8) + 0.01 * (setting["token_min_logp"] == -6.0)
        return {**setting, "wer": wer, "decoder_seconds": seconds}

    measured = coordinate_speed_search(_SPEED_VALUES, _speed_setting(), measure, best_wer=0.10)
    assert len(calls) == len(set(calls)) == len(measured)
    assert len(measured) < 3 * 3 * 2 * 3 * 3 // 4
    best = fastest_admissible(measured, 0.10)
    assert (best["beam_width"], best["beam_threshold"], best["token_beam"], best["blank_skip"],
            best["token_min_logp"]) == (16, 10.0, 4, 0.99, -8.0)
    # With slack for both losses (2 + 1 points) the lossy knobs become admissible and are taken.
    measured = coordinate_speed_search(_SPEED_VALUES, _speed_setting(), measure, best_wer=0.10, slack=0.035)
    best = fastest_admissible(measured, 0.10, 0.035)
    assert (best["beam_width"], best["token_min_logp"]) == (8, -6.0)


def test_the_coordinate_speed_search_sweeps_again_when_one_knob_unlocks_another():
    from dsnn_keras.evaluate import coordinate_speed_search, fastest_admissible

    def measure(setting):   # blank skipping loses a word at threshold 25 (none at 10), and the narrow token
        # beam pays only once blanks are skipped: the token beam, walked before the blank skip, moves on the
        # second sweep
        skip, narrow = setting["blank_skip"] is not None, setting["token_beam"] == 4
        wer = 0.10 + 0.01 * (skip and setting["beam_threshold"] == 25.0)
        seconds = 1.0 - 0.3 * skip - 0.2 * (narrow and skip) + 0.1 * (narrow and not skip) \
            - 0.1 * (setting["beam_threshold"] == 10.0)
        return {**setting, "wer": wer, "decoder_seconds": seconds}

    measured = coordinate_speed_search(_SPEED_VALUES, _speed_setting(), measure, best_wer=0.10)
    best = fastest_admissible(measured, 0.10)
    assert best["beam_threshold"] == 10.0 and best["blank_skip"] is not None and best["token_beam"] == 4
    assert best["decoder_seconds"] == pytest.approx(0.4)
    one_sweep = coordinate_speed_search(_SPEED_VALUES, _speed_setting(), measure, best_wer=0.10, max_sweeps=1)
    assert fastest_admissible(one_sweep, 0.10)["token_beam"] == 8


def test_the_coordinate_speed_search_never_takes_a_setting_above_the_wer():
    from dsnn_keras.evaluate import coordinate_speed_search, fastest_admissible

    def measure(setting):   # anything but the start is faster and loses a word
        start = setting == _speed_setting()
        return {**setting, "wer": 0.10 if start else 0.11, "decoder_seconds": 1.0 if start else 0.1}

    measured = coordinate_speed_search(_SPEED_VALUES, _speed_setting(), measure, best_wer=0.10)
    assert fastest_admissible(measured, 0.10)["decoder_seconds"] == 1.0
    # One sweep, each knob's values tried from the start only: nothing moved, so no second sweep.
    assert len(measured) == 1 + sum(len(values) - 1 for values in _SPEED_VALUES.values())


def test_a_beam_width_given_with_tune_is_where_the_search_starts_and_the_evaluation_uses_the_tuned_one(
        tmp_path, monkeypatch):
    from dsnn_keras import evaluate
    from dsnn_keras.evaluate import main

    # Which setting is fastest is a timing (this untrained model decodes in ~0.1 ms either way, so it
    # is noise here); the rule has its own test. This one takes the narrowest admissible width.
    def narrowest(grid, best_wer, slack=0.0):
        admissible = [g for g in grid if g["wer"] <= best_wer + slack + 1e-12]
        return min(admissible, key=lambda g: g["beam_width"]) if admissible else None

    monkeypatch.setattr(evaluate, "fastest_admissible", narrowest)
    run_dir, data = _untrained_run(tmp_path)
    out = tmp_path / "eval.json"
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_level", "0", "--beam_width", "64",
                 "--tune_beam_widths", "2", "--tune_wer_slack", "99", "--tune_lm_weights", "0.5",
                 "--tune_word_bonuses", "0", "--levels", "0", "--out", str(out)]) == 0
    settings = DecoderSettings.read(run_dir)
    grid = settings.tuned["speed_grid"]
    assert {g["beam_width"] for g in grid} == {64, 2}
    assert settings.beam.beam_width == 2   # the tuned width, not --beam_width's 64
    report = json.loads(out.read_text())
    assert report["decoder_config"]["beam"]["beam_width"] == settings.beam.beam_width


def test_the_speed_rule_keeps_the_fastest_setting_within_the_wer_slack():
    from dsnn_keras.evaluate import fastest_admissible

    def setting(threshold, wer, seconds, skip=None):
        return {"beam_threshold": threshold, "token_beam": 8, "blank_skip": skip, "wer": wer, "decoder_seconds": seconds}

    exact, one_word, two_words = setting(25, 0.100, 0.30), setting(15, 0.104, 0.20, 0.99), setting(10, 0.108, 0.10)
    grid = [exact, one_word, two_words]
    assert fastest_admissible(grid, 0.100) == exact
    assert fastest_admissible(grid, 0.100, slack=0.005) == one_word
    assert fastest_admissible(grid, 0.100, slack=0.01) == two_words
    assert fastest_admissible(grid, 0.09) is None
    tie = setting(15, 0.100, 0.30)
    assert fastest_admissible([tie, exact], 0.100) == exact   # equal time: the wider search
    floored = {**exact, "token_min_logp": -5.0}
    assert fastest_admissible([floored, exact], 0.100) == exact   # ... and no token floor
    narrow, wide = {**exact, "beam_width": 8}, {**exact, "beam_width": 32}
    assert fastest_admissible([narrow, wide], 0.100) == wide
    assert fastest_admissible([{**narrow, "decoder_seconds": 0.1}, wide], 0.100)["beam_width"] == 8


def test_tune_records_its_wer_slack_and_keeps_the_fastest_setting_within_it(tmp_path, capsys):
    from dsnn_keras.evaluate import main, tune_decoder

    run_dir, data = _untrained_run(tmp_path)
    for slack in (0.0, 0.9):
        result = tune_decoder(run_dir, data, level=0, lm_weights=(1.0,), word_bonuses=(0.0,), out_dir=tmp_path / str(slack),
                              beam_thresholds=(25.0, 1.0), token_beams=(8, 1), speed_wer_slack=slack)
        admissible = [g for g in result["speed_grid"] if g["wer"] <= result["best"]["wer"] + slack + 1e-12]
        assert result["speed"] in admissible
        assert result["speed"]["decoder_seconds"] == min(g["decoder_seconds"] for g in admissible)
        assert DecoderSettings.read(tmp_path / str(slack)).tuned["speed_wer_slack"] == slack
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_wer_slack", "-1"]) == 1
    assert "--tune_wer_slack: expected WER points in [0, 100), got -1.0" in capsys.readouterr().err


def test_tune_with_one_pruning_setting_uses_it_and_a_bad_one_is_refused_before_the_model_runs(tmp_path, capsys):
    from dsnn_keras.evaluate import EvaluationError, main, tune_decoder

    run_dir, data = _untrained_run(tmp_path)
    result = tune_decoder(run_dir, data, lm_weights=(0.5,), word_bonuses=(0.0,), beam_thresholds=(12.0,),
                          token_beams=(3,), blank_skips=(0.9,), beam_widths=(32,),   # 32: stage 1's own
                          token_min_logps=(-6.0,))
    settings = DecoderSettings.read(run_dir)
    assert (settings.beam.beam_threshold, settings.beam.token_beam, settings.beam.blank_skip,
            settings.beam.token_min_logp) == (12.0, 3, 0.9, -6.0)
    assert result["speed_grid"] == []
    assert settings.tuned["speed_search"] is None   # no walk ran, so none is recorded
    with pytest.raises(EvaluationError, match="--tune_speed_search must be one of coordinate, grid, got 'fast'"):
        tune_decoder(run_dir, data, speed_search="fast")
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_token_beams", "0,4"]) == 1
    assert "--tune speed grid: token_beam must be" in capsys.readouterr().err
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_beam_widths", "16,0"]) == 1
    assert "--tune speed grid: beam_width must be" in capsys.readouterr().err
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_token_beams", "4,x"]) == 1
    assert "--tune_token_beams: expected comma-separated integers" in capsys.readouterr().err
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_blank_skips", "none,1.2"]) == 1
    assert "--tune speed grid: blank_skip must be a probability" in capsys.readouterr().err
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_token_min_logps", "none,0.5"]) == 1
    assert "--tune speed grid: token_min_logp must be a log-probability below 0" in capsys.readouterr().err
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_token_min_logps", "none,x"]) == 1
    assert "--tune_token_min_logps: expected comma-separated numbers or 'none'" in capsys.readouterr().err
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_level", "0,x"]) == 1
    assert "--tune_level: 'x' is not a level index" in capsys.readouterr().err
    assert main([str(run_dir), "--data", str(data), "--tune", "--tune_level", "4"]) == 1
    assert "--tune_level: level 4 is out of range: the run has 4 levels" in capsys.readouterr().err
