"""Speed perturbation (Kaldi / ESPnet style): the ``--speed_perturb`` factors and the resampling.

A speed factor ``f`` changes tempo and pitch together, as sox's ``speed`` effect does in Kaldi's
``perturb_data_dir_speed.sh``: the waveform, sampled at ``sr``, is resampled to ``sr / f`` (with
soxr) and the result is read as ``sr`` again. A clip of ``n`` samples becomes ``≈ n / f`` samples and
every frequency ``F`` in it becomes ``F · f`` (0.9: 11 % longer and lower; 1.1: 9 % shorter and
higher). The transcript does not change.

Only the training split is perturbed (`PERTURBED_SPLITS`); a perturbed copy's id is
``sp<f>-<id>`` (Kaldi's prefix), the factor 1.0 copy is the original example with its own id.

Example:
    >>> parse_speed_factors("1.1,0.9,1.0")
    (0.9, 1.0, 1.1)
    >>> perturbed_id("fash-an251-b", 0.9), perturbed_id("fash-an251-b", 1.0)
    ('sp0.9-fash-an251-b', 'fash-an251-b')
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MIN_FACTOR, MAX_FACTOR = 0.5, 2.0
NO_PERTURBATION = (1.0,)
PERTURBED_SPLITS = ("train",)  # never dev, test or any held-out split: those stay the real audio


def parse_speed_factors(text: str, flag: str = "--speed_perturb") -> tuple[float, ...]:
    """Parses and validates comma-separated speed factors, e.g. ``"0.9,1.0,1.1"``.

    Args:
        text: The flag's value.
        flag: The flag's name, for the error message. Defaults to ``"--speed_perturb"``.

    Returns:
        The factors, sorted ascending; ``(1.0,)`` means no perturbation.

    Raises:
        ValueError: naming the flag and the bad value: not a number, not finite, outside
            ``[0.5, 2.0]``, a duplicate, or no ``1.0`` among the factors (the original audio is always kept).
    """
    parts = [part.strip() for part in str(text).split(",")]
    if not parts or any(not part for part in parts):
        raise ValueError(f"{flag} {text!r}: expected comma-separated speed factors such as 0.9,1.0,1.1 "
                         "(an empty item)")
    factors = []
    for part in parts:
        try:
            factor = float(part)
        except ValueError:
            raise ValueError(f"{flag} {text!r}: {part!r} is not a number; expected comma-separated speed "
                             "factors such as 0.9,1.0,1.1") from None
        if not math.isfinite(factor) or not MIN_FACTOR <= factor <= MAX_FACTOR:
            raise ValueError(f"{flag} {text!r}: factor {part} is outside [{MIN_FACTOR}, {MAX_FACTOR}] "
                             "(a speed change of more than 2x is not speech augmentation)")
        if factor in factors:
            raise ValueError(f"{flag} {text!r}: factor {part} is given twice")
        factors.append(factor)
    if 1.0 not in factors:
        raise ValueError(f"{flag} {text!r}: the factors must include 1.0 (the original audio is always "
                         "kept, as in Kaldi and ESPnet)")
    return tuple(sorted(factors))


def format_factor(factor: float) -> str:
    """The factor as written in ids and reports: ``0.9``, ``1.0``, ``1.05``."""
    text = f"{factor:g}"
    return text if "." in text or "e" in text else text + ".0"


def format_factors(factors: Sequence[float]) -> str:
    """``(0.9, 1.0, 1.1)`` -> ``"0.9,1.0,1.1"`` (the flag's canonical value)."""
    return ",".join(format_factor(f) for f in factors)


def perturbed_id(utt_id: str, factor: float) -> str:
    """Kaldi's id for the copy at ``factor``: ``sp0.9-<id>``; the factor 1.0 copy keeps ``utt_id``."""
    return utt_id if factor == 1.0 else f"sp{format_factor(factor)}-{utt_id}"


def speed_perturb(waveform: np.ndarray, factor: float, sample_rate: int, quality: str = "HQ") -> np.ndarray:
    """Changes speed (tempo and pitch together) by ``factor``, keeping the sample rate.

    Args:
        waveform: float32 mono samples at ``sample_rate``.
        factor: Speed factor: > 1 is faster and higher, < 1 slower and lower.
        sample_rate: The waveform's rate in Hz (also the output's).
        quality: soxr quality (``AudioConfig.resample_quality``). Defaults to "HQ".

    Returns:
        float32 samples, ``≈ len(waveform) / factor`` of them; ``waveform`` itself for factor 1.0.

    Example:
        >>> speed_perturb(np.zeros(16000, np.float32), 1.1, 16000).shape
        (14545,)
    """
    if factor == 1.0:
        return waveform
    import soxr

    out = soxr.resample(np.asarray(waveform, np.float32), sample_rate, sample_rate / factor, quality=quality)
    return np.ascontiguousarray(out, dtype=np.float32)
