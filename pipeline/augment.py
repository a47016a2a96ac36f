"""Audio augmentation of the train split (``dsnn-prepare --augment gain,noise,reverb --augment_copies N``).

Every train example (each speed-perturbed copy included) gets ``N`` augmented copies beside it; the
clean example is kept as it is. Each copy passes through every chosen augmentation, always in the
order silence padding → room reverberation → additive noise → channel → bandwidth → gain (the
recording's start and end, then a room's echo, then the noise at the microphone, then the
microphone's and the recording chain's frequency response, then its sample rate, then the recording
level), each with its own random draws:

* ``pad``: silence before and after the speech, as an app's recording has it (a clip trimmed to the
  word, as FSDD's are, has none): a length drawn from ``--pad_s`` (default 0 to 0.5 s) for each side,
  filled with Gaussian noise at the level of the clip's own quietest 10 ms (its noise floor; zeros
  for a clip that has digital silence). A model trained on FSDD's trimmed clips beside AN4 learned
  that a band-limited clip starting with speech is a digit: the AN4 + FSDD model of 2026-12-06 got
  40 of 40 clips of a training speaker right, and 5 of 40 once 0.3 s of such silence was put before
  and after them (docs/results.md). The copy is longer than the clip by the padding.

* ``reverb``: convolution with a synthetic room impulse response (`room_impulse_response`): a
  direct-path impulse plus a tail of Gaussian noise whose envelope decays by 60 dB in ``RT60``
  seconds (Polack's statistical model of a diffuse room), the tail scaled to a direct-to-reverberant
  energy ratio (DRR). ``RT60`` is drawn from ``--reverb_rt60``, the DRR from `DRR_DB`. The output
  keeps the input's length (the tail past the end of the clip is cut, as Kaldi's ``wav-reverberate``
  does) and its mean power (so the level is the gain step's business).
* ``noise``: generated white, pink or brown noise (power ∝ 1/f^0, 1/f, 1/f^2 above 20 Hz; the
  colour drawn uniformly) added at an SNR drawn from ``--noise_snr_db``, the SNR being the ratio of
  the clip's mean power to the noise's over the whole clip (silences included). The project has no
  noise corpus, so the noise is generated, not recorded: it teaches robustness to stationary
  broadband noise, not to babble, music or transients.
* ``channel``: the frequency response of another microphone and recording chain, which colours a
  recording the way one fixed filter does (FSDD's six speakers differ mostly in this: the share of
  their energy above 2 kHz ranges from 0.6 % to 54 %). A zero-phase magnitude response, applied in
  the frequency domain: a spectral tilt in dB per octave about 1 kHz drawn from ``--channel_tilt_db``
  (default -6 to +6; held at its 250 Hz and 8 kHz values beyond those), plus `CHANNEL_BANDS` peaks
  or dips of `CHANNEL_BAND_GAIN_DB` at centres drawn log-uniformly in `CHANNEL_BAND_HZ`, each a
  Gaussian in log frequency with a standard deviation of half an octave; the response is clipped to
  `CHANNEL_LIMIT_DB`. Below `CHANNEL_MIN_HZ` (DC, rumble) nothing is changed. The output keeps the
  input's length and the mean power of its part above `CHANNEL_MIN_HZ`.
* ``bandwidth``: the recording chain of a lower sample rate (a telephone line, a cheap microphone, an
  8 kHz corpus such as FSDD): the clip is resampled with soxr to a rate drawn from
  ``--bandwidth_rates`` (default 8000 or 11025 Hz) and back, which removes everything above that
  rate's Nyquist frequency (4 or 5.5 kHz) as such a recording lacks it; length kept.
* ``gain``: the level scaled by a gain in dB drawn from ``--gain_db`` (Kaldi's volume perturbation
  draws a factor in [1/8, 2], i.e. -18 to +6 dB, the default here), lowered when it would push the
  peak above 1.0 (0 dBFS) so that a copy never clips: per-utterance level robustness.

The draws are deterministic: each kind's generator is seeded from the SHA-256 of ``seed``, the kind,
the utterance id, the speed factor and the copy number (`rng_for`), so a copy does not depend on the
runner, the worker, the order of the utterances, or which other kinds are on. `draw` gives a copy's
parameters and `apply` the audio they make, so the parameters of any copy can be recomputed.

Only the ``train`` split is augmented (`AUGMENTED_SPLITS`); a copy's id is ``aug<k>-<id>``
(``aug1-sp0.9-fash-0-0001`` for the first copy of a speed-perturbed one).

Example:
    >>> config = AugmentConfig(kinds=("gain",), copies=1)
    >>> params = draw("gain", config, "fash-0-0001", 1.0, 1)
    >>> -18.0 <= params.gain_db <= 6.0
    True
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Sequence

import numpy as np

KINDS = ("pad", "reverb", "noise", "channel", "bandwidth", "gain")   # the order in which they are applied
NOISE_COLORS = ("white", "pink", "brown")
_COLOR_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}   # noise power ∝ 1 / f**exponent
NOISE_MIN_HZ = 20.0                          # below this the coloured spectrum is flat (no DC / sub-audio build-up)
DRR_DB = (0.0, 10.0)                         # direct-to-reverberant ratio of the synthetic rooms, dB
AUGMENTED_SPLITS = ("train",)                # never dev, test or any held-out split

DEFAULT_GAIN_DB = (-18.0, 6.0)
DEFAULT_NOISE_SNR_DB = (5.0, 20.0)
DEFAULT_REVERB_RT60_S = (0.2, 0.8)
DEFAULT_BANDWIDTH_RATES = (8000, 11025)
DEFAULT_CHANNEL_TILT_DB = (-6.0, 6.0)        # dB per octave about CHANNEL_PIVOT_HZ
DEFAULT_PAD_S = (0.0, 0.5)                   # silence before and after, each drawn from this, seconds
PAD_FLOOR_WINDOW_S = 0.01                    # the noise floor: the RMS of the clip's quietest window this long
CHANNEL_PIVOT_HZ = 1000.0
CHANNEL_BANDS = 2                            # random peaks/dips per copy
CHANNEL_BAND_GAIN_DB = (-10.0, 10.0)
CHANNEL_BAND_HZ = (200.0, 6000.0)            # band centres, drawn log-uniformly
CHANNEL_BAND_SIGMA_OCTAVES = 0.5             # a band's standard deviation in log frequency
CHANNEL_LIMIT_DB = (-30.0, 20.0)             # the response is clipped to this
CHANNEL_TILT_HZ = (250.0, 8000.0)            # the tilt is held at its end values outside this band
CHANNEL_MIN_HZ = 50.0                        # below this (DC, rumble) the clip is left as it is
CHANNEL_PAD_S = 0.05                         # zero padding against the FFT filter's circular wrap
BANDWIDTH_RATE_LIMITS = (2000, 48000)
_LIMITS = {"--gain_db": (-60.0, 20.0), "--noise_snr_db": (-10.0, 60.0), "--reverb_rt60": (0.05, 3.0),
           "--channel_tilt_db": (-12.0, 12.0), "--pad_s": (0.0, 2.0)}


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What ``--augment`` does.

    Args:
        kinds: The augmentations applied to every copy, a subset of `KINDS` (in that order);
            empty = off. Defaults to ().
        copies: Augmented copies per train example. Defaults to 1.
        seed: Mixed into every draw. Defaults to 0.
        gain_db: ``(low, high)`` gain range in dB. Defaults to (-18, 6).
        noise_snr_db: ``(low, high)`` SNR range in dB. Defaults to (5, 20).
        reverb_rt60_s: ``(low, high)`` RT60 range in seconds. Defaults to (0.2, 0.8).
        bandwidth_rates: Sample rates (Hz) a ``bandwidth`` copy is band-limited to, one drawn per
            copy. Defaults to (8000, 11025).
        channel_tilt_db: ``(low, high)`` spectral tilt range of a ``channel`` copy in dB per octave.
            Defaults to (-6, 6).
        pad_s: ``(low, high)`` seconds of silence a ``pad`` copy gets before and after (each side
            drawn). Defaults to (0, 0.5).
    """

    kinds: tuple[str, ...] = ()
    copies: int = 1
    seed: int = 0
    gain_db: tuple[float, float] = DEFAULT_GAIN_DB
    noise_snr_db: tuple[float, float] = DEFAULT_NOISE_SNR_DB
    reverb_rt60_s: tuple[float, float] = DEFAULT_REVERB_RT60_S
    bandwidth_rates: tuple[int, ...] = DEFAULT_BANDWIDTH_RATES
    channel_tilt_db: tuple[float, float] = DEFAULT_CHANNEL_TILT_DB
    pad_s: tuple[float, float] = DEFAULT_PAD_S

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"AugmentConfig.kinds: unknown {unknown}; expected some of {list(KINDS)}")
        object.__setattr__(self, "kinds", tuple(k for k in KINDS if k in self.kinds))
        if self.kinds and not 1 <= self.copies <= 100:
            raise ValueError(f"--augment_copies must be in [1, 100], got {self.copies}")
        for flag, value in (("--gain_db", self.gain_db), ("--noise_snr_db", self.noise_snr_db),
                            ("--reverb_rt60", self.reverb_rt60_s), ("--channel_tilt_db", self.channel_tilt_db),
                            ("--pad_s", self.pad_s)):
            _check_range(flag, tuple(value))
        object.__setattr__(self, "bandwidth_rates", _check_rates(tuple(self.bandwidth_rates)))

    @property
    def enabled(self) -> bool:
        return bool(self.kinds)

    def to_dict(self) -> dict:
        """What ``dataset.json`` records under ``"augment"``: the kinds and the ranges that were used."""
        out = {"kinds": list(self.kinds), "copies": self.copies, "seed": self.seed, "splits": list(AUGMENTED_SPLITS)}
        if "pad" in self.kinds:
            out["pad"] = {"seconds_each_side": list(self.pad_s), "fill": "Gaussian noise at the clip's quietest "
                          f"{PAD_FLOOR_WINDOW_S * 1000:g} ms RMS"}
        if "reverb" in self.kinds:
            out["reverb"] = {"rt60_s": list(self.reverb_rt60_s), "drr_db": list(DRR_DB), "model": "exponential-decay noise tail"}
        if "noise" in self.kinds:
            out["noise"] = {"snr_db": list(self.noise_snr_db), "colors": list(NOISE_COLORS), "source": "generated"}
        if "bandwidth" in self.kinds:
            out["bandwidth"] = {"rates_hz": list(self.bandwidth_rates), "method": "soxr resampling down and back"}
        if "channel" in self.kinds:
            out["channel"] = {"tilt_db_per_octave": list(self.channel_tilt_db), "pivot_hz": CHANNEL_PIVOT_HZ,
                              "tilt_hz": list(CHANNEL_TILT_HZ), "bands": CHANNEL_BANDS,
                              "band_gain_db": list(CHANNEL_BAND_GAIN_DB), "band_hz": list(CHANNEL_BAND_HZ),
                              "band_sigma_octaves": CHANNEL_BAND_SIGMA_OCTAVES, "limit_db": list(CHANNEL_LIMIT_DB),
                              "unchanged_below_hz": CHANNEL_MIN_HZ}
        if "gain" in self.kinds:
            out["gain"] = {"gain_db": list(self.gain_db), "peak_limit": 1.0}
        return out


def parse_kinds(text: str) -> tuple[str, ...]:
    """``--augment gain,noise,reverb`` -> the kinds in application order (`KINDS`).

    Raises:
        ValueError: naming the flag and the unknown, empty or repeated item.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if any(not p for p in parts):
        raise ValueError(f"--augment {text!r}: expected a comma list of {','.join(KINDS)} (an empty item)")
    for part in parts:
        if part not in KINDS:
            raise ValueError(f"--augment {text!r}: unknown augmentation {part!r}; expected some of {','.join(KINDS)}")
    if len(set(parts)) != len(parts):
        raise ValueError(f"--augment {text!r}: an augmentation is given twice")
    return tuple(k for k in KINDS if k in parts)


def _check_range(flag: str, value: tuple[float, float]) -> tuple[float, float]:
    low_limit, high_limit = _LIMITS[flag]
    shown = ",".join(f"{v:g}" for v in value)
    if len(value) != 2 or not all(math.isfinite(v) for v in value):
        raise ValueError(f"{flag} {shown}: expected two finite numbers LOW,HIGH")
    if value[0] > value[1]:
        raise ValueError(f"{flag} {shown}: LOW must be <= HIGH")
    if value[0] < low_limit or value[1] > high_limit:
        raise ValueError(f"{flag} {shown}: the range must lie within [{low_limit:g}, {high_limit:g}]")
    return value


def _check_rates(rates: tuple) -> tuple[int, ...]:
    low, high = BANDWIDTH_RATE_LIMITS
    shown = ",".join(str(r) for r in rates)
    if not rates:
        raise ValueError("--bandwidth_rates: expected at least one sample rate in Hz, e.g. 8000,11025")
    if any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) for r in rates):
        raise ValueError(f"--bandwidth_rates {shown}: expected whole numbers of Hz")
    if any(not low <= r <= high for r in rates):
        raise ValueError(f"--bandwidth_rates {shown}: each rate must lie within [{low}, {high}] Hz")
    if len(set(rates)) != len(rates):
        raise ValueError(f"--bandwidth_rates {shown}: a rate is given twice")
    return tuple(int(r) for r in rates)


def parse_rates(text: str) -> tuple[int, ...]:
    """Parses ``--bandwidth_rates 8000,11025``.

    Raises:
        ValueError: naming the flag: not whole numbers, outside [2000, 48000] Hz, or repeated.
    """
    try:
        rates = tuple(int(p.strip()) for p in str(text).split(","))
    except ValueError:
        raise ValueError(f"--bandwidth_rates {text!r}: expected comma-separated sample rates in Hz, "
                         "e.g. 8000,11025") from None
    return _check_rates(rates)


def parse_range(text: str, flag: str) -> tuple[float, float]:
    """Parses ``LOW,HIGH`` for ``--gain_db``, ``--noise_snr_db``, ``--reverb_rt60``, ``--channel_tilt_db``
    or ``--pad_s`` (one number = a fixed value).

    Raises:
        ValueError: naming the flag: not numbers, LOW > HIGH, or outside the flag's limits
            (gain within [-60, 20] dB, SNR within [-10, 60] dB, RT60 within [0.05, 3] s, tilt within
            [-12, 12] dB per octave, padding within [0, 2] s).
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 1:
        parts = parts * 2
    try:
        value = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected LOW,HIGH (two numbers), e.g. "
                         f"{','.join(f'{v:g}' for v in _defaults()[flag])}") from None
    if len(value) != 2:
        raise ValueError(f"{flag} {text!r}: expected LOW,HIGH (two numbers), got {len(value)}")
    return _check_range(flag, value)


def _defaults() -> dict:
    return {"--gain_db": DEFAULT_GAIN_DB, "--noise_snr_db": DEFAULT_NOISE_SNR_DB, "--reverb_rt60": DEFAULT_REVERB_RT60_S,
            "--channel_tilt_db": DEFAULT_CHANNEL_TILT_DB, "--pad_s": DEFAULT_PAD_S}


def augmented_id(utt_id: str, copy: int) -> str:
    """The id of augmented copy ``k`` (from 1): ``aug<k>-<id>``; copy 0 (the clean example) keeps ``utt_id``."""
    return utt_id if copy == 0 else f"aug{copy}-{utt_id}"


def rng_for(kind: str, utt_id: str, factor: float, copy: int, seed: int) -> np.random.Generator:
    """The generator of one kind of augmentation of one copy, seeded from SHA-256(seed, kind, id, factor, copy)."""
    digest = hashlib.sha256(f"{seed}\0{kind}\0{utt_id}\0{factor!r}\0{copy}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


@dataclasses.dataclass(frozen=True)
class GainParams:
    gain_db: float


@dataclasses.dataclass(frozen=True)
class NoiseParams:
    snr_db: float
    color: str
    seed: int


@dataclasses.dataclass(frozen=True)
class BandwidthParams:
    rate: int


@dataclasses.dataclass(frozen=True)
class ChannelParams:
    tilt_db_per_octave: float
    bands: tuple[tuple[float, float], ...]   # (centre Hz, gain dB)


@dataclasses.dataclass(frozen=True)
class PadParams:
    before_s: float
    after_s: float
    seed: int


@dataclasses.dataclass(frozen=True)
class ReverbParams:
    rt60_s: float
    drr_db: float
    seed: int


def draw(kind: str, config: AugmentConfig, utt_id: str, factor: float, copy: int):
    """The parameters of augmentation ``kind`` for copy ``copy`` of ``utt_id`` at speed ``factor``."""
    rng = rng_for(kind, utt_id, factor, copy, config.seed)
    if kind == "gain":
        return GainParams(float(rng.uniform(*config.gain_db)))
    if kind == "pad":
        return PadParams(float(rng.uniform(*config.pad_s)), float(rng.uniform(*config.pad_s)), int(rng.integers(2 ** 63)))
    if kind == "noise":
        snr = float(rng.uniform(*config.noise_snr_db))
        return NoiseParams(snr, NOISE_COLORS[int(rng.integers(len(NOISE_COLORS)))], int(rng.integers(2 ** 63)))
    if kind == "reverb":
        rt60 = float(rng.uniform(*config.reverb_rt60_s))
        return ReverbParams(rt60, float(rng.uniform(*DRR_DB)), int(rng.integers(2 ** 63)))
    if kind == "bandwidth":
        return BandwidthParams(int(config.bandwidth_rates[int(rng.integers(len(config.bandwidth_rates)))]))
    if kind == "channel":
        tilt = float(rng.uniform(*config.channel_tilt_db))
        low, high = (math.log(f) for f in CHANNEL_BAND_HZ)
        return ChannelParams(tilt, tuple((float(math.exp(rng.uniform(low, high))), float(rng.uniform(*CHANNEL_BAND_GAIN_DB)))
                                         for _ in range(CHANNEL_BANDS)))
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {KINDS}")


def apply(kind: str, waveform: np.ndarray, params, sample_rate: int) -> np.ndarray:
    """Applies one augmentation with its drawn ``params``; returns new float32 samples (the input is not changed)."""
    if kind == "gain":
        return apply_gain(waveform, params.gain_db)
    if kind == "noise":
        return add_noise(waveform, params, sample_rate)
    if kind == "reverb":
        return reverberate(waveform, params, sample_rate)
    if kind == "bandwidth":
        return band_limit(waveform, params.rate, sample_rate)
    if kind == "channel":
        return colour_channel(waveform, params, sample_rate)
    if kind == "pad":
        return pad_silence(waveform, params, sample_rate)
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {KINDS}")


def noise_floor(waveform: np.ndarray, sample_rate: int) -> float:
    """RMS of the quietest `PAD_FLOOR_WINDOW_S` window of the clip (of the whole clip if shorter)."""
    x = np.asarray(waveform, np.float64)
    window = max(1, int(round(PAD_FLOOR_WINDOW_S * sample_rate)))
    if x.size == 0:
        return 0.0
    if x.size <= window:
        return float(np.sqrt(np.mean(x ** 2)))
    usable = x[: x.size // window * window].reshape(-1, window)
    return float(np.sqrt(np.mean(usable ** 2, axis=1)).min())


def pad_silence(waveform: np.ndarray, params: PadParams, sample_rate: int) -> np.ndarray:
    """The clip with ``params.before_s`` / ``after_s`` of noise at its own floor (`noise_floor`) around it."""
    x = np.asarray(waveform, np.float32)
    floor = noise_floor(x, sample_rate)
    rng = np.random.default_rng(params.seed)
    before = rng.normal(0.0, floor, int(round(params.before_s * sample_rate))).astype(np.float32)
    after = rng.normal(0.0, floor, int(round(params.after_s * sample_rate))).astype(np.float32)
    return np.concatenate([before, x, after])


def limited_gain_db(waveform: np.ndarray, gain_db: float) -> float:
    """``gain_db``, or less when it would put the peak above 1.0: the gain `apply_gain` applies."""
    peak = float(np.max(np.abs(waveform), initial=0.0))
    if peak <= 0.0:
        return gain_db
    return min(gain_db, -20.0 * math.log10(peak))


def apply_gain(waveform: np.ndarray, gain_db: float) -> np.ndarray:
    """Scales the samples by ``gain_db`` (peak-limited to 1.0, `limited_gain_db`)."""
    factor = 10.0 ** (limited_gain_db(waveform, gain_db) / 20.0)
    return (np.asarray(waveform, np.float64) * factor).astype(np.float32)


def colored_noise(rng: np.random.Generator, n: int, color: str, sample_rate: int) -> np.ndarray:
    """Unit-RMS noise of ``n`` samples whose power falls as ``1/f**e`` (white 0, pink 1, brown 2) above
    `NOISE_MIN_HZ`; shaped from Gaussian white noise in the frequency domain, no DC."""
    if n == 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(n)
    if color == "white":
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), NOISE_MIN_HZ)
        spectrum *= freqs ** (-_COLOR_EXPONENT[color] / 2.0)
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n)
    rms = float(np.sqrt(np.mean(noise ** 2)))
    return (noise / rms if rms > 0 else noise).astype(np.float32)


def add_noise(waveform: np.ndarray, params: NoiseParams, sample_rate: int) -> np.ndarray:
    """Adds ``params.color`` noise at ``params.snr_db`` (clip power / noise power, whole clip); a
    silent clip is returned unchanged (its SNR is undefined)."""
    x = np.asarray(waveform, np.float64)
    power = float(np.mean(x ** 2)) if x.size else 0.0
    if power <= 0.0:
        return np.asarray(waveform, np.float32).copy()
    noise = colored_noise(np.random.default_rng(params.seed), x.size, params.color, sample_rate).astype(np.float64)
    noise *= math.sqrt(power / 10.0 ** (params.snr_db / 10.0) / float(np.mean(noise ** 2)))
    return (x + noise).astype(np.float32)


def room_impulse_response(params: ReverbParams, sample_rate: int) -> np.ndarray:
    """A synthetic room impulse response: 1.0 at t = 0 (the direct path), then Gaussian noise under
    the envelope ``10 ** (-3 t / RT60)`` (-60 dB at ``RT60``) for ``RT60`` seconds, scaled so that
    the direct-to-tail energy ratio is ``params.drr_db``."""
    length = max(2, int(round(params.rt60_s * sample_rate)))
    rng = np.random.default_rng(params.seed)
    t = np.arange(1, length) / sample_rate
    tail = rng.standard_normal(length - 1) * 10.0 ** (-3.0 * t / params.rt60_s)
    tail *= math.sqrt(10.0 ** (-params.drr_db / 10.0) / float(np.sum(tail ** 2)))
    return np.concatenate([[1.0], tail])


def reverberate(waveform: np.ndarray, params: ReverbParams, sample_rate: int) -> np.ndarray:
    """Convolves with `room_impulse_response` (FFT, numpy), keeps the input's length and mean power."""
    x = np.asarray(waveform, np.float64)
    power = float(np.mean(x ** 2)) if x.size else 0.0
    if power <= 0.0:
        return np.asarray(waveform, np.float32).copy()
    h = room_impulse_response(params, sample_rate)
    size = 1 << int(math.ceil(math.log2(x.size + h.size - 1)))
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: x.size]
    y *= math.sqrt(power / max(float(np.mean(y ** 2)), 1e-30))
    return y.astype(np.float32)


def channel_response_db(params: ChannelParams, freqs_hz: np.ndarray) -> np.ndarray:
    """The ``channel`` kind's magnitude response in dB at ``freqs_hz``: the tilt about
    `CHANNEL_PIVOT_HZ` (held at its values at the ends of `CHANNEL_TILT_HZ`) plus each band's Gaussian
    bump in log frequency, clipped to `CHANNEL_LIMIT_DB`; 0 dB below `CHANNEL_MIN_HZ`."""
    freqs = np.asarray(freqs_hz, np.float64)
    octaves = np.log2(np.maximum(freqs, CHANNEL_MIN_HZ) / CHANNEL_PIVOT_HZ)
    low, high = (math.log2(f / CHANNEL_PIVOT_HZ) for f in CHANNEL_TILT_HZ)
    response = params.tilt_db_per_octave * np.clip(octaves, low, high)
    for centre, gain in params.bands:
        distance = (octaves - math.log2(centre / CHANNEL_PIVOT_HZ)) / CHANNEL_BAND_SIGMA_OCTAVES
        response = response + gain * np.exp(-0.5 * distance ** 2)
    return np.where(freqs < CHANNEL_MIN_HZ, 0.0, np.clip(response, *CHANNEL_LIMIT_DB))


def colour_channel(waveform: np.ndarray, params: ChannelParams, sample_rate: int) -> np.ndarray:
    """Filters the clip by `channel_response_db`: zero phase, one FFT of the clip zero-padded by
    `CHANNEL_PAD_S` (so the filter's short tails do not wrap round), numpy. The part below
    `CHANNEL_MIN_HZ` passes unchanged; the rest is scaled to keep its energy; the length is kept. A clip
    with nothing above `CHANNEL_MIN_HZ` is returned unchanged."""
    x = np.asarray(waveform, np.float64)
    if x.size == 0:
        return np.asarray(waveform, np.float32).copy()
    size = 1 << int(math.ceil(math.log2(x.size + int(CHANNEL_PAD_S * sample_rate))))
    spectrum = np.fft.rfft(x, size)
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    band = freqs >= CHANNEL_MIN_HZ
    energy = float(np.sum(np.abs(spectrum[band]) ** 2))
    if energy <= 0.0:
        return np.asarray(waveform, np.float32).copy()
    filtered = spectrum * 10.0 ** (channel_response_db(params, freqs) / 20.0)
    filtered[band] *= math.sqrt(energy / max(float(np.sum(np.abs(filtered[band]) ** 2)), 1e-30))
    return np.fft.irfft(filtered, size)[: x.size].astype(np.float32)


def band_limit(waveform: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """The clip as a recording at ``rate`` Hz would have it: resampled to ``rate`` and back to
    ``sample_rate`` with soxr (its anti-aliasing filter removes what lies above ``rate / 2``); the
    length is kept. A ``rate`` at or above ``sample_rate`` returns a copy."""
    x = np.asarray(waveform, np.float32)
    if rate >= sample_rate or x.size == 0:
        return x.copy()
    import soxr

    y = soxr.resample(soxr.resample(x, sample_rate, rate, quality="HQ"), rate, sample_rate, quality="HQ")
    if y.size >= x.size:
        return np.ascontiguousarray(y[: x.size], np.float32)
    return np.concatenate([y, np.zeros(x.size - y.size, np.float32)]).astype(np.float32)


def augment_copy(waveform: np.ndarray, config: AugmentConfig, utt_id: str, factor: float, copy: int,
                 sample_rate: int, kinds: Sequence[str] | None = None) -> np.ndarray:
    """One augmented copy: every kind of ``kinds`` (default ``config.kinds``) applied in `KINDS` order."""
    for kind in (k for k in KINDS if k in (config.kinds if kinds is None else kinds)):
        waveform = apply(kind, waveform, draw(kind, config, utt_id, factor, copy), sample_rate)
    return waveform
