"""espeak-ng speech synthesis through the ``espeakng-loader`` wheel (ctypes; no system packages).

Determinism: espeak-ng is not reproducible inside one process (the same call twice gives slightly
different samples, and re-initialising or ``espeak_ng_SetRandSeed`` does not help), but a fresh
process gives byte-identical output. So every call of :func:`synthesize` forks a child that
initialises espeak-ng, synthesises one utterance, writes the 16-bit samples to a pipe and exits.
The calling process only ``dlopen``s the library and never calls into it, so every child starts
from the same pristine library state. A fork costs about a millisecond (far less than starting a
Python interpreter), so this is also the fast design. POSIX only (``os.fork``).

One exception, found while testing this design: variants that add *breath* noise (``f2``, ``f3``,
``f5``, ``whisper`` ...) give output that depends on the process's memory state even in a fresh
child, so they are not reproducible at all; :func:`variant_uses_breath` identifies them and the
corpus refuses them. The child also resets libc's ``rand()`` seed, which espeak-ng uses.
"""
from __future__ import annotations

import ctypes
import functools
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from dsnn_keras.errors import DsnnError

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flag values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RAND_SEED = 1  # glibc's initial rand() seed, i.e. what a fresh process starts from
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# Child exit codes (beyond 0 = success).
_EXIT_INIT, _EXIT_VOICE, _EXIT_PARAM, _EXIT_SYNTH = 3, 4, 5, 6
_EXIT_MESSAGES = {
    _EXIT_INIT: "espeak_Initialize failed (is the espeak-ng data directory intact?)",
    _EXIT_VOICE: "espeak_SetVoiceByName rejected the voice",
    _EXIT_PARAM: "espeak_SetParameter rejected a rate/pitch/range value",
    _EXIT_SYNTH: "espeak_Synth failed",
}

SAMPLE_RATE = 22050
"""espeak-ng's output sample rate (Hz), 16-bit mono."""


class EspeakError(DsnnError, RuntimeError):
    """espeak-ng could not synthesise the request (bad voice, library failure)."""


@dataclass(frozen=True)
class VoiceSettings:
    """How espeak-ng speaks: voice (accent), variant (timbre), rate, pitch and pitch range.

    Args:
        voice: espeak-ng voice name, e.g. ``"en-us"``, ``"en-gb-scotland"``.
        variant: voice variant file name from ``espeak-ng-data/voices/!v`` (``"m3"``, ``"f2"``),
            or ``""`` for the voice's own timbre. Defaults to ``""``.
        rate: speaking rate in words per minute, 80..450. Defaults to 175.
        pitch: base pitch, 0..99. Defaults to 50.
        pitch_range: pitch range (intonation), 0..99. Defaults to 50.

    Example:
        >>> VoiceSettings("en-us", "f3", rate=160, pitch=60).voice_name
        'en-us+f3'
    """

    voice: str
    variant: str = ""
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50

    def __post_init__(self):
        if not self.voice:
            raise ValueError("VoiceSettings.voice: expected an espeak-ng voice name, got ''")
        for name, low, high in (("rate", 80, 450), ("pitch", 0, 99), ("pitch_range", 0, 99)):
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"VoiceSettings.{name}: expected an int in {low}..{high}, got {value!r}")

    @property
    def voice_name(self) -> str:
        """The name given to ``espeak_SetVoiceByName`` (``voice+variant``)."""
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


def data_path() -> pathlib.Path:
    """The espeak-ng data directory shipped in the ``espeakng-loader`` wheel."""
    import espeakng_loader

    return pathlib.Path(espeakng_loader.get_data_path())


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    return lib


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)  # the process's C library, the one libespeak-ng's rand() resolves to
    libc.srand.argtypes = [ctypes.c_uint]
    libc.srand.restype = None
    return libc


def _child(write_fd: int, text: bytes | None, settings: VoiceSettings | None, voice_name: bytes) -> int:
    """Runs in the forked child: synthesise and stream samples to ``write_fd``; returns the exit code."""
    lib = _library()
    # espeak-ng draws breath noise (f2/f3-style variants) from libc rand(); its state is inherited
    # from whatever the parent process did, so reset it to a fixed seed in every child.
    _libc().srand(_RAND_SEED)
    lib.espeak_ng_SetRandSeed(_RAND_SEED)
    if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path()).encode(), 0) <= 0:
        return _EXIT_INIT
    if lib.espeak_SetVoiceByName(voice_name) != 0:
        return _EXIT_VOICE
    if text is None:  # voice check only
        return 0
    for param, value in ((_PARAM_RATE, settings.rate), (_PARAM_PITCH, settings.pitch),
                         (_PARAM_RANGE, settings.pitch_range)):
        if lib.espeak_SetParameter(param, value, 0) != 0:
            return _EXIT_PARAM
    chunks: list[bytes] = []

    def on_samples(wav, num_samples, _events):
        if wav and num_samples > 0:
            chunks.append(ctypes.string_at(wav, num_samples * 2))
        return 0

    callback = _CALLBACK(on_samples)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
        return _EXIT_SYNTH
    lib.espeak_Synchronize()
    view = memoryview(b"".join(chunks))
    while view:
        view = view[os.write(write_fd, view):]
    return 0


def _run_in_child(text: bytes | None, settings: VoiceSettings | None, voice_name: str) -> tuple[int, bytes]:
    _library()  # dlopen in the parent once; never call into it here (keeps the state pristine)
    _libc()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's Python stack
        code = 1
        try:
            os.close(read_fd)
            code = _child(write_fd, text, settings, voice_name.encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    parts = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read(1 << 16):
            parts.append(chunk)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(parts)


def synthesize(text: str, settings: VoiceSettings) -> np.ndarray:
    """Speak ``text`` with espeak-ng in a fresh forked process (byte-reproducible).

    Args:
        text: the text to speak (plain text, UTF-8).
        settings: voice, variant, rate, pitch and range.

    Returns:
        int16 samples at :data:`SAMPLE_RATE` Hz, mono.

    Raises:
        EspeakError: the voice is unknown or espeak-ng failed.

    Example:
        >>> samples = synthesize("YES", VoiceSettings("en-us"))
        >>> samples.dtype, samples.size > 0
        (dtype('int16'), True)
    """
    code, pcm = _run_in_child(text.encode("utf-8"), settings, settings.voice_name)
    if code != 0:
        reason = _EXIT_MESSAGES.get(code, f"the espeak-ng child process exited with status {code}")
        raise EspeakError(f"espeak-ng voice {settings.voice_name!r}: {reason}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def voice_exists(voice_name: str) -> bool:
    """Whether espeak-ng accepts ``voice_name`` (e.g. ``"en-us"`` or ``"en-us+f3"``)."""
    code, _ = _run_in_child(None, None, voice_name)
    return code == 0


def variant_exists(variant: str) -> bool:
    """Whether ``variant`` is a voice variant file shipped in ``espeak-ng-data/voices/!v``."""
    return bool(variant) and "/" not in variant and (data_path() / "voices" / "!v" / variant).is_file()


def variant_uses_breath(variant: str) -> bool:
    """Whether the variant file adds breath noise (a non-zero ``breath`` line, e.g. ``f2``, ``f3``, ``f5``).

    espeak-ng's breath noise is NOT reproducible: it depends on the state of the process's memory
    (measured: the same request gave different samples after unrelated imports), so the corpus
    refuses such variants. Variants without breath were byte-identical in every process state tried.
    """
    text = (data_path() / "voices" / "!v" / variant).read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        fields = line.split("//")[0].split()
        if fields and fields[0] == "breath" and any(f != "0" for f in fields[1:]):
            return True
    return False


def reproducible_variants() -> list[str]:
    """Variants that exist and add no breath noise (safe for a byte-reproducible corpus)."""
    return [v for v in variants() if not variant_uses_breath(v)]


def english_voices() -> list[str]:
    """espeak-ng's English voice names (``en``, ``en-us``, ``en-gb-scotland`` ...), for help and errors.

    espeak-ng looks a voice up by its file name under ``espeak-ng-data/lang`` (case-insensitive).
    """
    skip = {"en-shaw"}  # Shavian alphabet, not for Latin-script text
    return sorted(n for n in (p.name.lower() for p in (data_path() / "lang").rglob("en*") if p.is_file())
                  if n not in skip)


def variants() -> list[str]:
    """All voice variant names shipped with espeak-ng (``m1``, ``f3``, ``klatt`` ...)."""
    return sorted(p.name for p in (data_path() / "voices" / "!v").iterdir() if p.is_file())
