"""Augmentation in the preparation job (``dsnn-prepare --augment``): the signal functions, their
seeded draws, and the labelled Beam transforms on real decoded (8 kHz -> 16 kHz) audio."""
import math

import numpy as np
import pytest
import soundfile as sf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

import apache_beam as beam
from dsnn_keras.frontend import FeatureConfig
from pipeline import augment as aug
from pipeline.audio import AudioConfig, load_audio
from pipeline.prepare import LOCAL_RUNNER
from pipeline.records import Reject, Utterance
from pipeline.tokenizer import train_tokenizer
from pipeline.transforms import AugmentCopiesDoFn, AugmentDoFn, DecodeUtterance, FeaturizeUtterance

RATE = 16000
CONFIG = aug.AugmentConfig(kinds=("gain", "noise", "reverb", "channel"), copies=2, seed=7)


def _burst(seconds_on=0.3, seconds=1.0, hz=700.0, amplitude=0.1):
    t = np.arange(int(seconds * RATE)) / RATE
    x = amplitude * np.sin(2 * np.pi * hz * t)
    x[int(seconds_on * RATE):] = 0.0
    return x.astype(np.float32)


def _db(power_ratio):
    return 10.0 * math.log10(power_ratio)


def test_draws_are_deterministic_per_utterance_copy_and_seed_and_within_the_ranges():
    for kind in ("reverb", "noise", "gain", "channel"):   # continuous draws (bandwidth picks one of a few rates)
        first = aug.draw(kind, CONFIG, "fash-0-0001", 1.0, 1)
        assert first == aug.draw(kind, CONFIG, "fash-0-0001", 1.0, 1)
        others = {aug.draw(kind, CONFIG, "fash-0-0001", 1.0, 2), aug.draw(kind, CONFIG, "fash-0-0002", 1.0, 1),
                  aug.draw(kind, CONFIG, "fash-0-0001", 0.9, 1),
                  aug.draw(kind, aug.AugmentConfig(kinds=CONFIG.kinds, seed=8), "fash-0-0001", 1.0, 1)}
        assert first not in others and len(others) == 4
    draws = [aug.draw("noise", CONFIG, f"u{i}", 1.0, 1) for i in range(300)]
    assert all(5.0 <= d.snr_db <= 20.0 for d in draws)
    assert {d.color for d in draws} == set(aug.NOISE_COLORS)
    assert all(-18.0 <= aug.draw("gain", CONFIG, f"u{i}", 1.0, 1).gain_db <= 6.0 for i in range(100))
    assert all(0.2 <= aug.draw("reverb", CONFIG, f"u{i}", 1.0, 1).rt60_s <= 0.8 for i in range(100))
    channels = [aug.draw("channel", CONFIG, f"u{i}", 1.0, 1) for i in range(100)]
    assert all(-6.0 <= c.tilt_db_per_octave <= 6.0 and len(c.bands) == aug.CHANNEL_BANDS for c in channels)
    assert all(200.0 <= hz <= 6000.0 and -10.0 <= db <= 10.0 for c in channels for hz, db in c.bands)
    rates = [aug.draw("bandwidth", CONFIG, f"u{i}", 1.0, 1).rate for i in range(100)]
    assert set(rates) == {8000, 11025} and rates == [aug.draw("bandwidth", CONFIG, f"u{i}", 1.0, 1).rate
                                                     for i in range(100)]
    x = _burst()
    a = aug.augment_copy(x, CONFIG, "u1", 1.0, 1, RATE)
    assert a.dtype == np.float32 and a.shape == x.shape
    assert a.tobytes() == aug.augment_copy(x, CONFIG, "u1", 1.0, 1, RATE).tobytes()
    assert a.tobytes() != aug.augment_copy(x, CONFIG, "u1", 1.0, 2, RATE).tobytes()


def test_gain_scales_by_the_drawn_db_and_never_pushes_the_peak_over_one():
    quiet = _burst(amplitude=0.05)
    params = aug.GainParams(5.5)
    y = aug.apply("gain", quiet, params, RATE)
    np.testing.assert_allclose(y[quiet != 0] / quiet[quiet != 0], 10 ** (5.5 / 20), rtol=1e-5)
    down = aug.apply("gain", quiet, aug.GainParams(-17.0), RATE)
    assert _db(np.mean(down.astype(np.float64) ** 2) / np.mean(quiet.astype(np.float64) ** 2)) == pytest.approx(-17.0, abs=1e-3)
    loud = _burst(amplitude=0.8)
    capped = aug.apply("gain", loud, aug.GainParams(6.0), RATE)   # +6 dB would reach 1.6
    assert np.max(np.abs(capped)) == pytest.approx(1.0, abs=1e-6)
    assert aug.limited_gain_db(loud, 6.0) == pytest.approx(-20 * math.log10(np.max(np.abs(loud))))


@pytest.mark.parametrize("color", aug.NOISE_COLORS)
def test_noise_is_added_at_the_drawn_snr_and_has_its_colour(color):
    x = _burst(amplitude=0.2)
    params = aug.NoiseParams(snr_db=7.3, color=color, seed=11)
    y = aug.apply("noise", x, params, RATE)
    noise = y.astype(np.float64) - x
    assert _db(np.mean(x.astype(np.float64) ** 2) / np.mean(noise ** 2)) == pytest.approx(7.3, abs=0.5)
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / RATE)
    bands = ((freqs > 100) & (freqs < 400), (freqs > 3200) & (freqs < 6400))
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[color]   # power ∝ 1 / f**exponent
    expected = _db(np.mean(freqs[bands[0]] ** -exponent) / np.mean(freqs[bands[1]] ** -exponent))
    assert _db(spectrum[bands[0]].mean() / spectrum[bands[1]].mean()) == pytest.approx(expected, abs=1.5)
    assert np.array_equal(y, aug.apply("noise", x, params, RATE))
    silence = np.zeros(RATE, np.float32)
    assert not aug.apply("noise", silence, params, RATE).any()   # SNR undefined: left silent


def test_reverb_adds_a_tail_that_decays_at_the_drawn_rt60_and_keeps_length_and_power():
    x = _burst(seconds_on=0.3, seconds=1.2)
    params = aug.ReverbParams(rt60_s=0.5, drr_db=3.0, seed=5)
    y = aug.apply("reverb", x, params, RATE).astype(np.float64)
    assert y.shape == x.shape
    assert np.mean(y ** 2) == pytest.approx(np.mean(x.astype(np.float64) ** 2), rel=1e-6)
    end = int(0.3 * RATE)
    frame = int(0.01 * RATE)
    def energies(signal):
        return np.array([np.mean(signal[end + i * frame: end + (i + 1) * frame] ** 2) for i in range(40)])
    dry, wet = energies(x.astype(np.float64)), energies(y)
    burst = np.mean(y[:end] ** 2)
    assert dry.max() == 0.0                        # the dry signal stops dead
    assert wet[5] > 1e-3 * burst                   # 50-60 ms later the room still rings
    # the tail's level falls 60 dB per RT60: fit dB against time over the first 200 ms after the burst
    t = (np.arange(20) + 0.5) * 0.01
    slope = np.polyfit(t, 10 * np.log10(wet[:20]), 1)[0]
    assert -60.0 / slope == pytest.approx(0.5, rel=0.25)
    h = aug.room_impulse_response(params, RATE)
    assert h[0] == 1.0 and h.size == int(0.5 * RATE)
    assert _db(1.0 / np.sum(h[1:] ** 2)) == pytest.approx(3.0, abs=1e-6)


def test_bandwidth_removes_what_lies_above_the_drawn_rates_nyquist_and_keeps_the_length():
    t = np.arange(RATE) / RATE
    low, high = 0.1 * np.sin(2 * np.pi * 1000 * t), 0.1 * np.sin(2 * np.pi * 6000 * t)
    x = (low + high).astype(np.float32)
    y = aug.apply("bandwidth", x, aug.BandwidthParams(rate=8000), RATE)
    assert y.dtype == np.float32 and y.shape == x.shape
    spectrum = np.abs(np.fft.rfft(y[1000:-1000] * np.hanning(RATE - 2000)))
    reference = np.abs(np.fft.rfft(x[1000:-1000] * np.hanning(RATE - 2000)))
    bin_of = lambda hz: int(round(hz * (RATE - 2000) / RATE))
    assert _db((spectrum[bin_of(1000)] / reference[bin_of(1000)]) ** 2) == pytest.approx(0.0, abs=0.5)
    assert _db((spectrum[bin_of(6000)] / reference[bin_of(6000)]) ** 2) < -40.0   # 6 kHz > 4 kHz Nyquist: gone
    kept = aug.apply("bandwidth", x, aug.BandwidthParams(rate=16000), RATE)   # no lower rate: unchanged
    assert kept.tobytes() == x.tobytes() and kept is not x
    assert aug.band_limit(np.zeros(0, np.float32), 8000, RATE).size == 0


def test_channel_tilts_the_spectrum_by_the_drawn_db_per_octave_and_keeps_length_and_power():
    t = np.arange(RATE) / RATE
    tones = (500.0, 1000.0, 2000.0, 4000.0)
    x = sum(0.05 * np.sin(2 * np.pi * hz * t) for hz in tones).astype(np.float32)
    params = aug.ChannelParams(tilt_db_per_octave=-5.0, bands=())
    y = aug.apply("channel", x, params, RATE)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.mean(y.astype(np.float64) ** 2) == pytest.approx(np.mean(x.astype(np.float64) ** 2), rel=0.01)
    middle = slice(RATE // 4, 3 * RATE // 4)   # away from the clip's ends
    level = lambda signal, hz: _db(np.abs(np.fft.rfft(signal[middle].astype(np.float64)))[int(hz / 2)] ** 2)
    relative = [level(y, hz) - level(x, hz) for hz in tones]
    assert np.diff(relative) == pytest.approx([-5.0, -5.0, -5.0], abs=0.05)   # one octave apart: the tilt


def test_channel_bands_and_limits_follow_the_documented_shape():
    bump = aug.ChannelParams(0.0, ((1000.0, 8.0),))
    response = aug.channel_response_db(bump, np.array([1000.0, 2000.0, 8000.0]))
    assert response[0] == pytest.approx(8.0) and response[1] == pytest.approx(8.0 * math.exp(-2.0))   # sigma 1/2 octave
    assert response[2] == pytest.approx(0.0, abs=1e-3)   # three octaves away: untouched
    steep = aug.channel_response_db(aug.ChannelParams(12.0, ()), np.array([16000.0, 8000.0, 100.0, 20.0, 0.0]))
    assert list(steep) == [20.0, 20.0, -24.0, 0.0, 0.0]   # +36 clipped; held below 250 Hz; nothing below 50 Hz


def test_channel_is_zero_phase_and_leaves_dc_and_silence_alone():
    impulse = np.zeros(RATE, np.float32)
    impulse[RATE // 2] = 1.0
    y = aug.apply("channel", impulse, aug.ChannelParams(-6.0, ((800.0, 9.0),)), RATE)
    assert int(np.argmax(np.abs(y))) == RATE // 2 and y[RATE // 2] > 0   # a symmetric filter: no delay
    assert y[RATE // 2 - 40] == pytest.approx(y[RATE // 2 + 40], abs=1e-6)
    tone = 0.05 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)
    offset = (tone + 0.005).astype(np.float32)
    shifted = aug.apply("channel", offset, aug.ChannelParams(-6.0, ()), RATE)
    assert np.mean(shifted) == pytest.approx(0.005, rel=0.02)   # DC neither boosted nor removed
    assert np.std(shifted) == pytest.approx(np.std(tone), rel=0.02)
    silent = np.zeros(100, np.float32)
    assert aug.apply("channel", silent, aug.ChannelParams(-6.0, ()), RATE).tobytes() == silent.tobytes()


@pytest.mark.parametrize("text, message", [("8000,8000", "given twice"), ("1000", "within [2000, 48000]"),
                                           ("8k", "expected comma-separated"), ("", "expected comma-separated")])
def test_bad_bandwidth_rates_are_refused_naming_the_flag(text, message):
    with pytest.raises(ValueError, match="--bandwidth_rates") as error:
        aug.parse_rates(text)
    assert message in str(error.value)
    assert aug.parse_rates("11025,8000") == (11025, 8000)


@pytest.mark.parametrize("text, flag, message", [
    ("20,5", "--noise_snr_db", "LOW must be <= HIGH"),
    ("-50,10", "--noise_snr_db", "within [-10, 60]"),
    ("loud,10", "--noise_snr_db", "expected LOW,HIGH"),
    ("1,2,3", "--noise_snr_db", "got 3"),
    ("nan,5", "--gain_db", "two finite numbers"),
    ("0,5", "--reverb_rt60", "within [0.05, 3]"),
    ("-20,0", "--channel_tilt_db", "within [-12, 12]"),
])
def test_bad_ranges_are_refused_naming_the_flag(text, flag, message):
    with pytest.raises(ValueError, match=flag) as error:
        aug.parse_range(text, flag)
    assert message in str(error.value)


def test_kinds_are_applied_in_a_fixed_order_and_bad_kinds_refused():
    assert aug.parse_kinds("gain,reverb") == ("reverb", "gain")
    assert aug.parse_kinds("gain,bandwidth,noise") == ("noise", "bandwidth", "gain")
    assert aug.parse_kinds("bandwidth,channel,reverb") == ("reverb", "channel", "bandwidth")
    for text, message in (("gain,echo", "unknown augmentation 'echo'"), ("gain,,noise", "empty item"),
                          ("gain,gain", "given twice")):
        with pytest.raises(ValueError, match=message):
            aug.parse_kinds(text)


def test_beam_transforms_augment_train_copies_only_deterministically(data_dir):
    """Decode (real 8 kHz FSDD WAV, resampled) -> AugmentCopies -> Reverb -> Noise -> Gain -> Featurize:
    train gets 2 augmented copies with aug<k>- ids, different audio and features, each exactly the
    seeded pure function of the clean audio (so any run gives the same bytes); dev passes through."""
    wav = data_dir / "fsdd" / "recordings" / "3_theo_7.wav"
    assert sf.info(str(wav)).samplerate == 8000
    utts = [Utterance("3_theo_7", str(wav), "three", "theo", "train"),
            Utterance("3_theo_8", str(data_dir / "fsdd" / "recordings" / "3_theo_8.wav"), "three", "theo", "dev_fsdd")]
    model = train_tokenizer(["three", "two"], 16, "char")
    clean = load_audio(str(wav), AudioConfig())
    features = FeatureConfig(num_mel_bins=20)

    def check(outputs):
        assert not [o for o in outputs if isinstance(o, Reject)]
        by_id = {o.utt_id: o for o in outputs}
        assert sorted(by_id) == ["3_theo_7", "3_theo_8", "aug1-3_theo_7", "aug2-3_theo_7"]
        assert by_id["3_theo_8"].aug == 0 and by_id["3_theo_8"].split == "dev_fsdd"
        assert [by_id[i].aug for i in ("3_theo_7", "aug1-3_theo_7", "aug2-3_theo_7")] == [0, 1, 2]
        base = by_id["3_theo_7"].features
        for copy in ("aug1-3_theo_7", "aug2-3_theo_7"):
            assert by_id[copy].num_frames == by_id["3_theo_7"].num_frames
            assert np.abs(by_id[copy].features - base).mean() > 0.1

    def check_audio(outputs):
        by_id = {d.utt.utt_id: d for d in outputs}
        assert by_id["3_theo_8"].augmented == ()        # held-out: never augmented
        ((factor, waveform),) = by_id["3_theo_7"].copies
        assert factor == 1.0 and np.array_equal(waveform, clean)   # the clean copy is untouched
        copies = by_id["3_theo_7"].augmented
        assert [(f, k) for f, k, _ in copies] == [(1.0, 1), (1.0, 2)]
        for _, k, waveform in copies:
            expected = aug.augment_copy(clean, CONFIG, "3_theo_7", 1.0, k, RATE)
            assert waveform.tobytes() == expected.tobytes()
            assert not np.allclose(waveform, clean, atol=1e-3)

    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        tok = p | "Tok" >> beam.Create([model])
        decoded = (p | beam.Create(utts)
                   | "Decode" >> beam.ParDo(DecodeUtterance(AudioConfig()), beam.pvalue.AsSingleton(tok))
                   | "AugmentCopies" >> beam.ParDo(AugmentCopiesDoFn(CONFIG.copies)))
        for kind in CONFIG.kinds:
            decoded = decoded | kind.capitalize() >> beam.ParDo(AugmentDoFn(kind, CONFIG, RATE))
        examples = decoded | "Featurize" >> beam.ParDo(FeaturizeUtterance(features, AudioConfig()))
        assert_that(decoded, check_audio, label="audio")
        assert_that(examples, check, label="examples")



def test_pad_puts_the_drawn_silence_at_the_clips_own_floor_around_it_unchanged():
    config = aug.AugmentConfig(kinds=("pad",), seed=3)
    rng = np.random.default_rng(0)
    floor = 0.002
    x = np.concatenate([rng.normal(0, floor, RATE // 10), _burst(0.3, 0.3), rng.normal(0, floor, RATE // 10)])
    x = x.astype(np.float32)
    params = aug.draw("pad", config, "0_theo_1", 1.0, 1)
    assert 0.0 <= params.before_s <= 0.5 and 0.0 <= params.after_s <= 0.5 and params.before_s != params.after_s
    y = aug.apply("pad", x, params, RATE)
    before, after = int(round(params.before_s * RATE)), int(round(params.after_s * RATE))
    assert y.dtype == np.float32 and len(y) == before + len(x) + after
    np.testing.assert_array_equal(y[before:before + len(x)], x)             # the clip itself untouched
    silence = np.concatenate([y[:before], y[before + len(x):]])
    assert abs(np.sqrt(np.mean(silence.astype(np.float64) ** 2)) / floor - 1.0) < 0.25   # near the clip's floor
    assert aug.noise_floor(np.zeros(400, np.float32), RATE) == 0.0           # digital silence stays digital
    draws = [aug.draw("pad", aug.AugmentConfig(kinds=("pad",), pad_s=(0.2, 0.4)), f"u{i}", 1.0, 1) for i in range(50)]
    assert all(0.2 <= d.before_s <= 0.4 and 0.2 <= d.after_s <= 0.4 for d in draws)
    assert aug.parse_kinds("gain,pad") == ("pad", "gain")
    with pytest.raises(ValueError, match=r"--pad_s.*within \[0, 2\]"):
        aug.parse_range("0,3", "--pad_s")
    assert aug.AugmentConfig(kinds=("pad",)).to_dict()["pad"]["seconds_each_side"] == [0.0, 0.5]


def test_pad_flags_reach_the_config_and_are_refused_without_the_kind():
    from pipeline.prepare import _augment_config, build_parser

    def config(*flags):
        args, _ = build_parser().parse_known_args(["--input", "x", "--out", "y", *flags])
        return _augment_config(args)

    assert config("--augment", "pad", "--pad_s", "0.1,0.2").pad_s == (0.1, 0.2)
    with pytest.raises(ValueError, match="--augment gain has no pad"):
        config("--augment", "gain", "--pad_s", "0.1,0.2")
