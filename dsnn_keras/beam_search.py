"""CTC prefix beam search with word n-gram LM fusion, lexicon constraint and hot-word biasing.

The search itself is flashlight-text's (``flashlight.lib.text.decoder``: C++ beam search, KenLM
bundled in its wheel, the decoder torchaudio's ``ctc_decoder`` wraps); this module builds its
inputs from the project's pieces and `dsnn_keras.ngram_lm.LmBundle` and reads its results back.

**With an LM bundle** (lexicon decoder): hypotheses walk a trie of the lexicon's spellings (each
word twice: also with its last piece doubled, so a last piece held over several frames ends the word
once; the price: a last piece read again after a blank, ``r _ r``, may also read as one word, as the LM
prefers), so only words of the lexicon are formed (AN4's closed vocabulary); at each word end the word
LM's log10 probability times ``lm_weight`` plus ``word_bonus`` is added to the acoustic log-probability
(within a word, the trie's best unigram score below the node is used as look-ahead, "smearing").
Per frame: the ``token_beam`` best tokens extend each of the ``beam_width`` hypotheses; hypotheses
with the same LM state, trie node and last token are merged (max); those more than
``beam_threshold`` below the best are dropped. With ``blank_skip``, runs of frames that are
confidently blank are searched once (the first frame of each run): an approximation (the dropped
frames' small token probabilities no longer extend hypotheses) that took 25-30 % off the search on
AN4 dev with the same WER there. With ``token_min_logp``, a token less likely than that at a frame
is neither started nor held there (the blank and the frame's likeliest token always count).

**Without one** (or ``lexicon=False``): the lexicon-free prefix beam search over tokens, no LM.
With ``beam_width=1`` it is exactly greedy CTC (tested).

**Hot words**: phrases whose words get ``hotword_weight`` (natural-log units, like the acoustic
scores) each, as long as the hypothesis follows the phrase; a phrase left unfinished takes its
bonus back (context biasing with failure transitions). Words of a phrase missing from the lexicon
are added with a spelling from the pieces. Hot words need the lexicon decoder (an LM bundle).

Example:
    >>> decoder = BeamDecoder(pieces, blank_id, BeamSearchConfig(beam_width=16, lm_weight=0.8),
    ...                       lm=LmBundle.read_dir("data/an4/lm"))
    >>> decoder.decode(log_probs).text
    'yes no go'
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import pathlib
import re
import sys
import tempfile
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from dsnn_keras.decoding import WORD_BOUNDARY, ids_to_text
from dsnn_keras.errors import DsnnError
from dsnn_keras.ngram_lm import UNK, LmBundle

DECODERS = ("greedy", "beam")

# Added to every word end's score (natural-log units) so that ending a word and staying on its trie
# node never tie exactly. They tie when the word bonus is 0 and the LM's score of the word equals the
# node's look-ahead (any word at the start of a 1- or 2-gram LM), and flashlight orders tied
# candidates by their LM states' addresses: the beam's cut then kept a different one run to run
# (11 of 1,152 decodings of an untrained model's outputs changed between fresh decoders).
TIE_BREAK_WORD_SCORE = 1e-6
# Raised when the search decodes differently with the same settings (steps that tune or decode with
# it put it into their fingerprints, so their outputs are made again): 2 = the doubled last piece and
# the tie-break above (2026-12-06).
SEARCH_VERSION = 2
# What `BeamSearchConfig.token_min_logp` puts in place of a pruned token's log-prob: finite (the
# search's arithmetic stays finite) and so low that any candidate through it is below the beam threshold.
_PRUNED_LOG_PROB = -1e30


class BeamSearchError(DsnnError, ValueError):
    """A bad beam-search setting, hot word or input (the message names it)."""


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise BeamSearchError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _finite(value: Any, name: str, minimum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
        raise BeamSearchError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise BeamSearchError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class BeamSearchConfig:
    """Settings of the beam search (validated on construction; `from_dict` refuses unknown keys).

    Args:
        beam_width: Hypotheses kept per frame. Defaults to 32.
        lm_weight: Weight of the word LM's log10 probability. Defaults to 0.5.
        word_bonus: Added per word formed (counters the LM's preference for short outputs).
            Defaults to 0.0.
        token_beam: Tokens tried per frame and hypothesis (the most likely ones); None = all.
            Defaults to 8.
        beam_threshold: Hypotheses this far below the frame's best are dropped. Defaults to 25.0.
        lexicon: Use the LM bundle's lexicon and LM; False = lexicon-free search without LM.
            Defaults to True.
        blank_skip: Blank-frame skipping, a probability in (0.5, 1): a frame whose blank
            probability is at least this is a "confident blank", and of each run of consecutive
            confident blanks only the first is searched (it still separates repeated tokens; above
            0.5 a skipped frame's likeliest label is the blank, so greedy decoding is unchanged).
            An approximation: the skipped frames' token probabilities no longer extend hypotheses.
            None = every frame is searched. On AN4 dev 0.99 skips 39 % of the frames and takes
            25-30 % off the search at the same WER (docs/evaluation.md, "Tuning for speed").
            Defaults to None.
        token_min_logp: Token pruning per frame, a log-probability below 0: a token whose
            log-probability at a frame is below this gets -1e30 there, for every use (so it is
            neither started nor held through a repeat at that frame); the blank and the frame's
            likeliest token keep theirs (pyctcdecode's ``token_min_logp``, default -5 there). An
            approximation like ``blank_skip``: it removes candidates the search would sort and drop.
            None = no floor. Defaults to None.
    """

    beam_width: int = 32
    lm_weight: float = 0.5
    word_bonus: float = 0.0
    token_beam: Optional[int] = 8
    beam_threshold: float = 25.0
    lexicon: bool = True
    blank_skip: Optional[float] = None
    token_min_logp: Optional[float] = None

    def __post_init__(self):
        _positive_int(self.beam_width, "beam_width")
        _finite(self.lm_weight, "lm_weight", 0.0)
        _finite(self.word_bonus, "word_bonus")
        if self.token_beam is not None:
            _positive_int(self.token_beam, "token_beam")
        _finite(self.beam_threshold, "beam_threshold", 0.0)
        if not isinstance(self.lexicon, bool):
            raise BeamSearchError(f"lexicon must be true or false, got {self.lexicon!r}")
        if self.blank_skip is not None:
            _finite(self.blank_skip, "blank_skip")
            if not 0.5 < self.blank_skip < 1.0:
                raise BeamSearchError(f"blank_skip must be a probability in (0.5, 1) or null, got {self.blank_skip!r}")
        if self.token_min_logp is not None:
            _finite(self.token_min_logp, "token_min_logp")
            if not self.token_min_logp < 0.0:
                raise BeamSearchError(f"token_min_logp must be a log-probability below 0 or null, "
                                      f"got {self.token_min_logp!r}")

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        for optional in ("blank_skip", "token_min_logp"):   # off: readable by readers without the field
            if values[optional] is None:
                del values[optional]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "beam search config") -> "BeamSearchConfig":
        """Reads `to_dict` output; an unknown key or a bad value is a `BeamSearchError` naming ``where``."""
        if not isinstance(values, Mapping):
            raise BeamSearchError(f"{where}: must be an object, got {values!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BeamSearchError(f"{where}: unknown key(s) {unknown} (expected some of {sorted(known)})")
        try:
            return cls(**values)
        except BeamSearchError as error:
            raise BeamSearchError(f"{where}: {error}") from None


@dataclasses.dataclass(frozen=True)
class BeamResult:
    """One decoding.

    Attributes:
        text: The transcript (the lexicon's words, or the pieces' text without a lexicon).
        tokens: Token ids of the best path (blanks removed, repeats merged).
        score: The hypothesis' total score (acoustic + weighted LM + bonuses).
    """

    text: str
    tokens: list
    score: float


def parse_hotwords(text: Optional[str | Sequence[str]]) -> tuple[str, ...]:
    """``"set alarm, stop"`` (or a list) -> ``("set alarm", "stop")``: whitespace normalised, empties dropped."""
    if text is None:
        return ()
    parts = text.split(",") if isinstance(text, str) else list(text)
    phrases = []
    for part in parts:
        if not isinstance(part, str):
            raise BeamSearchError(f"hot words must be strings, got {part!r}")
        phrase = " ".join(part.split())
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    return tuple(phrases)


def spell_with_pieces(word: str, pieces: Sequence[str]) -> tuple[str, ...]:
    """A spelling of ``word`` in ``pieces`` by greedy longest match, the first piece carrying ``'▁'``.

    Exact for character tokenizers; for BPE/unigram ones a valid spelling (not always the one the
    tokenizer would choose). Used for hot words missing from the lexicon (no sentencepiece here).

    Raises:
        BeamSearchError: a character no piece covers.
    """
    vocab = set(pieces)
    text = WORD_BOUNDARY + word
    spelling: list[str] = []
    start = 0
    while start < len(text):
        for end in range(len(text), start, -1):
            if text[start:end] in vocab:
                spelling.append(text[start:end])
                start = end
                break
        else:
            if start == 0 and text[1:2] and text[1] in vocab and WORD_BOUNDARY not in vocab:
                start = 1   # a vocabulary without any word-boundary piece
                continue
            raise BeamSearchError(f"hot word {word!r}: no token piece covers {text[start]!r}")
    return tuple(spelling)


def _collapse(path: Sequence[int], blank_id: int) -> list[int]:
    tokens, previous = [], None
    for token in path:
        token = int(token)
        if token != previous and token != blank_id and token >= 0:
            tokens.append(token)
        previous = token
    return tokens


@contextlib.contextmanager
def _quiet_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _HotwordLM:
    """Factory of the hot-word LM (a flashlight ``LM`` subclass made on first use)."""

    cls = None

    @classmethod
    def make(cls, base, phrases: Sequence[tuple[int, ...]], bonus: float):
        if cls.cls is None:
            from flashlight.lib.text.decoder import LM, LMState

            class HotwordLM(LM):
                """``base`` LM plus ``bonus`` per word along a hot phrase (withdrawn if the phrase breaks)."""

                def __init__(self, base, phrases, bonus):
                    LM.__init__(self)
                    self.base, self.bonus = base, bonus
                    self.phrases = set(phrases)
                    self.prefixes = {p[:i] for p in phrases for i in range(1, len(p))}
                    self.states: dict = {}

                def _advance(self, progress, word):
                    sequence = progress + (word,)
                    banked = 0.0
                    if sequence in self.phrases:
                        banked, sequence = self.bonus * len(sequence), sequence[1:]
                    while sequence and sequence not in self.prefixes:
                        sequence = sequence[1:]
                    return sequence, banked + self.bonus * (len(sequence) - len(progress))

                def start(self, start_with_nothing):
                    self.states = {}
                    state = LMState()
                    self.states[state] = (self.base.start(start_with_nothing), (), 0.0)
                    return state

                def score(self, state, word):
                    child = state.child(word)
                    if child not in self.states:
                        base_state, progress, _ = self.states[state]
                        new_base, score = self.base.score(base_state, word)
                        progress, delta = self._advance(progress, word)
                        self.states[child] = (new_base, progress, score + delta)
                    return child, self.states[child][2]

                def finish(self, state):
                    base_state, progress, _ = self.states[state]
                    new_base, score = self.base.finish(base_state)
                    child = state.child(-1)
                    self.states[child] = (new_base, (), score)
                    return child, score - self.bonus * len(progress)

            cls.cls = HotwordLM
        return cls.cls(base, phrases, bonus)


class BeamDecoder:
    """Decodes per-frame CTC log-probabilities with the beam search (see the module docstring).

    Build once per model (loading the LM and the trie); `decode` is then reentrant-free but cheap:
    one flashlight decoder per call. Not thread-safe: give each thread its own, or hold a lock.

    Args:
        pieces: The token piece of every id (``blank_id`` = ``len(pieces)``).
        blank_id: The CTC blank's id.
        config: `BeamSearchConfig`. Defaults to its defaults.
        lm: The word LM and lexicon; None = lexicon-free search without LM.
        hotwords: Phrases to favour (see `parse_hotwords`). Defaults to none.
        hotword_weight: Bonus per hot-phrase word, natural-log units. Defaults to 0.0.

    Raises:
        BeamSearchError: hot words without an LM bundle or with ``lm_weight`` 0, a lexicon spelled in
            pieces the model does not have, a bad setting.
    """

    def __init__(self, pieces: Sequence[str], blank_id: int, config: BeamSearchConfig = BeamSearchConfig(),
                 lm: Optional[LmBundle] = None, hotwords: Sequence[str] = (), hotword_weight: float = 0.0):
        from flashlight.lib.text import decoder as fl

        self.pieces = list(pieces)
        self.blank_id = int(blank_id)
        self.config = config
        self.num_classes = len(self.pieces) + 1
        if not 0 <= self.blank_id < self.num_classes:
            raise BeamSearchError(f"blank_id {blank_id} is outside 0..{len(self.pieces)}")
        self.hotwords = parse_hotwords(hotwords)
        self.hotword_weight = _finite(hotword_weight, "hotword_weight")
        self.uses_lm = lm is not None and config.lexicon
        if self.hotwords and not self.uses_lm:
            raise BeamSearchError("hot words need the lexicon decoder: an LM bundle (dsnn-lm) and lexicon on")
        if self.hotwords and config.lm_weight == 0:
            raise BeamSearchError("hot words need lm_weight > 0 (their bonus is applied through the LM score)")
        self._fl = fl
        self._options = self._make_options()
        if not self.uses_lm:
            self._lm = fl.ZeroLM()
            self.words: list[str] = []
            return
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        lexicon = dict(lm.lexicon)
        for phrase in self.hotwords:
            for word in phrase.split():
                if word not in lexicon:
                    lexicon[word] = spell_with_pieces(word, self.pieces)
        self.words = sorted(lexicon)
        index = {piece: i for i, piece in enumerate(self.pieces)}
        word_dict = Dictionary()
        for word in self.words:
            word_dict.add_entry(word)
        word_dict.add_entry(UNK)
        self._unk = word_dict.get_index(UNK)
        self._kenlm = self._load_kenlm(KenLM, lm.arpa, word_dict)
        start = self._kenlm.start(False)
        self._trie = fl.Trie(self.num_classes, self.blank_id)
        for i, word in enumerate(self.words):
            missing = [piece for piece in lexicon[word] if piece not in index]
            if missing:
                raise BeamSearchError(f"lexicon word {word!r} is spelled with pieces the model lacks: {missing} "
                                      "(an LM built with another tokenizer?)")
            _, score = self._kenlm.score(start, i)
            spelling = [index[piece] for piece in lexicon[word]]
            self._trie.insert(spelling, i, score)
            # Again with the last piece doubled: flashlight ends a word on the first frame of its last
            # piece and then, at the root, reads a held piece as blank (it expects a silence piece to
            # end every spelling; SentencePiece spellings have none), so a one-piece word held for
            # three frames read twice ("r r"). The doubled entry lets the hold stay on the word's node
            # and end the word on the hold's last frame (AN4 dev, BPE 64: 2.0-2.4 WER points).
            self._trie.insert(spelling + spelling[-1:], i, score)
        self._trie.smear(fl.SmearingMode.MAX)
        word_ids = {word: i for i, word in enumerate(self.words)}
        self._phrases = [tuple(word_ids[w] for w in phrase.split()) for phrase in self.hotwords]

    def _make_options(self):
        fl, config = self._fl, self.config
        token_beam = min(config.token_beam or self.num_classes, self.num_classes)
        if not self.uses_lm:
            return fl.LexiconFreeDecoderOptions(
                beam_size=config.beam_width, beam_size_token=token_beam, beam_threshold=config.beam_threshold,
                lm_weight=0.0, sil_score=0.0, log_add=False, criterion_type=fl.CriterionType.CTC)
        return fl.LexiconDecoderOptions(
            beam_size=config.beam_width, beam_size_token=token_beam, beam_threshold=config.beam_threshold,
            lm_weight=config.lm_weight, word_score=config.word_bonus + TIE_BREAK_WORD_SCORE, unk_score=-math.inf,
            sil_score=0.0, log_add=False, criterion_type=fl.CriterionType.CTC)

    def with_config(self, **changes) -> "BeamDecoder":
        """A decoder sharing this one's LM and trie with some `BeamSearchConfig` fields changed
        (``lexicon`` excepted), e.g. ``with_config(lm_weight=1.0)`` while tuning."""
        if "lexicon" in changes and changes["lexicon"] != self.config.lexicon:
            raise BeamSearchError("with_config cannot switch the lexicon; build a new BeamDecoder")
        clone = copy.copy(self)
        clone.config = dataclasses.replace(self.config, **changes)
        if self.hotwords and clone.config.lm_weight == 0:
            raise BeamSearchError("hot words need lm_weight > 0 (their bonus is applied through the LM score)")
        clone._options = clone._make_options()   # pylint: disable=protected-access
        return clone

    @staticmethod
    def _load_kenlm(kenlm_class, arpa: str, word_dict):
        # KenLM reads a path; the ARPA text is written to a private temporary file for the load.
        handle, path = tempfile.mkstemp(prefix="dsnn-lm-", suffix=".arpa")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(arpa)
            try:
                with _quiet_stderr():   # KenLM prints a progress bar and a hint on fd 2
                    return kenlm_class(path, word_dict)
            except Exception as error:   # noqa: BLE001 - KenLM raises RuntimeError subclasses of its own
                raise BeamSearchError(f"KenLM refused the ARPA model: {' '.join(str(error).split())[:200]}") from None
        finally:
            pathlib.Path(path).unlink(missing_ok=True)

    def _new(self):
        """A fresh flashlight decoder and the LM it uses (keep both: a Python LM must outlive its use)."""
        fl = self._fl
        if not self.uses_lm:
            return fl.LexiconFreeDecoder(self._options, self._lm, self.blank_id, self.blank_id, []), self._lm
        lm = self._kenlm
        if self.hotwords and self.hotword_weight:
            lm = _HotwordLM.make(self._kenlm, self._phrases, self.hotword_weight / self.config.lm_weight)
        return fl.LexiconDecoder(self._options, self._trie, lm, self.blank_id, self.blank_id, self._unk, [], False), lm

    def _check(self, log_probs) -> np.ndarray:
        array = np.ascontiguousarray(log_probs, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.num_classes:
            raise BeamSearchError(f"log_probs must be [frames, {self.num_classes}], got shape {array.shape}")
        if not np.isfinite(array).all():
            raise BeamSearchError("log_probs contain NaN or inf")
        return array

    def _skip_blanks(self, array: np.ndarray, previous_confident: bool = False) -> tuple[np.ndarray, bool]:
        """The frames the search sees: of each run of confident blanks only the first (a run may
        continue from the previous chunk, ``previous_confident``); and whether the last frame was one."""
        if self.config.blank_skip is None or not array.shape[0]:
            return array, previous_confident
        confident = array[:, self.blank_id] >= math.log(self.config.blank_skip)
        before = np.concatenate([[previous_confident], confident[:-1]])
        keep = ~(confident & before)
        return (array if keep.all() else np.ascontiguousarray(array[keep])), bool(confident[-1])

    def _prune_tokens(self, array: np.ndarray) -> np.ndarray:
        """``token_min_logp``: the frames with each unlikely token's log-prob replaced by a score the
        search drops at once (the blank and each frame's likeliest token are kept)."""
        floor = self.config.token_min_logp
        if floor is None or not array.shape[0]:
            return array
        unlikely = array < floor
        unlikely[:, self.blank_id] = False
        unlikely[np.arange(array.shape[0]), array.argmax(axis=1)] = False
        if not unlikely.any():
            return array
        pruned = array.copy()
        pruned[unlikely] = _PRUNED_LOG_PROB
        return pruned

    def _result(self, hypothesis) -> BeamResult:
        tokens = _collapse(hypothesis.tokens, self.blank_id)
        if self.uses_lm:
            text = " ".join(self.words[w] for w in hypothesis.words if 0 <= w < len(self.words))
        else:
            text = ids_to_text(tokens, self.pieces)
        return BeamResult(text=text, tokens=tokens, score=float(hypothesis.score))

    def decode(self, log_probs) -> BeamResult:
        """Decodes one utterance.

        Args:
            log_probs: float ``[frames, len(pieces) + 1]`` per-frame log posteriors (log-softmax).

        Returns:
            The best `BeamResult`.
        """
        array, _ = self._skip_blanks(self._check(log_probs))
        array = self._prune_tokens(array)
        if array.shape[0] == 0:
            return BeamResult("", [], 0.0)
        decoder, _lm = self._new()
        results = decoder.decode(array.ctypes.data, array.shape[0], array.shape[1])
        return self._result(results[0]) if results else BeamResult("", [], float("-inf"))

    def stream(self) -> "BeamStream":
        """An incremental decoding (`BeamStream`): feed log-prob chunks as they come."""
        return BeamStream(self)


class BeamStream:
    """Incremental beam search over one utterance: `accept` chunks of log-probs, read `partial`, `finish`.

    The search state carries across chunks, so the final result equals `BeamDecoder.decode` over
    the concatenated chunks (tested). A partial result is the current best hypothesis (it may still
    change as later frames arrive).

    Attributes:
        frames: Frames the search has run over so far (with ``blank_skip``, fewer than received).
        finished: Whether `finish` was called.
    """

    def __init__(self, decoder: BeamDecoder):
        self._owner = decoder
        self._decoder, self._lm = decoder._new()   # pylint: disable=protected-access
        self._decoder.decode_begin()
        self.frames = 0
        self.finished = False
        self._last_confident_blank = False   # blank skipping: a confident-blank run may span chunks

    def accept(self, log_probs) -> None:
        """Runs the search over one chunk ``[frames, classes]`` (0 frames allowed)."""
        if self.finished:
            raise BeamSearchError("this beam stream is finished")
        array, self._last_confident_blank = self._owner._skip_blanks(   # pylint: disable=protected-access
            self._owner._check(log_probs), self._last_confident_blank)   # pylint: disable=protected-access
        array = self._owner._prune_tokens(array)   # pylint: disable=protected-access
        if array.shape[0]:
            self._decoder.decode_step(array.ctypes.data, array.shape[0], array.shape[1])
            self.frames += array.shape[0]

    def partial(self) -> BeamResult:
        """The best hypothesis so far."""
        if self.frames == 0:
            return BeamResult("", [], 0.0)
        return self._owner._result(self._decoder.get_best_hypothesis(0))   # pylint: disable=protected-access

    def finish(self) -> BeamResult:
        """Ends the utterance (the LM's end of sentence) and returns the best result."""
        if self.finished:
            raise BeamSearchError("this beam stream is finished")
        self.finished = True
        if self.frames == 0:
            return BeamResult("", [], 0.0)
        self._decoder.decode_end()
        results = self._decoder.get_all_final_hypothesis()
        return self._owner._result(results[0]) if results else BeamResult("", [], float("-inf"))   # pylint: disable=protected-access


def log_softmax(logits) -> np.ndarray:
    """Per-frame log-softmax over the last axis (float32)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


DECODER_FILE = "decoder.json"
DECODER_FORMAT = 1
RUN_LM_DIR = "lm"


@dataclasses.dataclass(frozen=True)
class DecoderSettings:
    """A run's decoder (``RUN/decoder.json``, written by ``dsnn-eval --tune``): what later evaluations
    and exports use unless told otherwise. The LM it tuned with is copied to ``RUN/lm/``.

    Args:
        decoder: ``"greedy"`` or ``"beam"``.
        beam: The `BeamSearchConfig` of every level without one of its own in ``level_beams``.
        lm_dir: The LM directory, relative to the run (``"lm"``) or absolute; None = no LM.
        tuned: How it was tuned (split, level(s), grid of WERs), or None.
        level_beams: Per-level settings ``{level index: BeamSearchConfig}`` (``dsnn-eval --tune
            --tune_level all``): a sparse level's log-probs are flatter, so it wants another LM weight
            (AN4, 90 %: 0.75 against 1.5 at the dense level, 2.0 WER points). Every entry has the
            same ``lexicon`` as ``beam`` (one LM and trie serve all levels). None = ``beam`` everywhere.

    Example:
        >>> settings = DecoderSettings(beam=BeamSearchConfig(lm_weight=1.5),
        ...                            level_beams={3: BeamSearchConfig(lm_weight=0.75)})
        >>> settings.beam_for(3).lm_weight, settings.beam_for(1).lm_weight
        (0.75, 1.5)
    """

    decoder: str = "beam"
    beam: BeamSearchConfig = BeamSearchConfig()
    lm_dir: Optional[str] = RUN_LM_DIR
    tuned: Optional[Mapping[str, Any]] = None
    level_beams: Optional[Mapping[int, BeamSearchConfig]] = None

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise BeamSearchError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.level_beams is not None:
            _check_level_beams(self.level_beams, self.beam)

    def check_levels(self, num_levels: int) -> None:
        """Raises `BeamSearchError` if ``level_beams`` names a level a model of ``num_levels`` lacks."""
        extra = sorted(level for level in (self.level_beams or {}) if level >= num_levels)
        if extra:
            raise BeamSearchError(f"settings for level(s) {extra}, but the run has levels 0..{num_levels - 1} "
                                  "(tuned on another run?)")

    def beam_for(self, level: int) -> BeamSearchConfig:
        """The settings level ``level`` decodes with: its own, else `beam`."""
        return (self.level_beams or {}).get(int(level), self.beam)

    def to_dict(self) -> dict:
        values = {"format_version": DECODER_FORMAT, "decoder": self.decoder, "beam": self.beam.to_dict(),
                  "lm_dir": self.lm_dir, "tuned": None if self.tuned is None else dict(self.tuned)}
        if self.level_beams:   # absent when not per level: such files stay readable by older readers
            values["levels"] = level_beams_to_dict(self.level_beams)
        return values

    def write(self, run_dir: str | os.PathLike) -> "fileio.AnyPath":
        """Writes ``RUN/decoder.json`` (temp file, then rename; RUN may be ``gs://...``)."""
        import json

        from dsnn_keras import fileio

        path = fileio.join(run_dir, DECODER_FILE)
        fileio.atomic_write(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def lm_path(self, run_dir: str | os.PathLike) -> Optional["fileio.AnyPath"]:
        """The LM directory: ``lm_dir`` under ``run_dir``, or ``lm_dir`` itself if absolute or a URL."""
        from dsnn_keras import fileio

        if self.lm_dir is None:
            return None
        if not fileio.is_local(self.lm_dir) or os.path.isabs(self.lm_dir):
            return fileio.as_path(self.lm_dir)
        return fileio.join(run_dir, self.lm_dir)

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> Optional["DecoderSettings"]:
        """``RUN/decoder.json``, or None if the run has none.

        Raises:
            BeamSearchError: a malformed file (named), an unknown key or a bad value.
        """
        import json

        from dsnn_keras import fileio

        path = fileio.join(run_dir, DECODER_FILE)
        if not fileio.isfile(path):
            return None
        try:
            values = json.loads(fileio.read_text(path))
        except ValueError as error:
            raise BeamSearchError(f"{path}: not valid JSON ({error})") from None
        known = {"format_version", "decoder", "beam", "lm_dir", "tuned", "levels"}
        if not isinstance(values, dict) or set(values) - known:
            raise BeamSearchError(f"{path}: expected an object with keys {sorted(known)}, got "
                                  f"{sorted(values) if isinstance(values, dict) else values!r}")
        if values.get("format_version") != DECODER_FORMAT:
            raise BeamSearchError(f"{path}: format_version {values.get('format_version')!r}; this reader "
                                  f"understands {DECODER_FORMAT}")
        lm_dir = values.get("lm_dir")
        if lm_dir is not None and not isinstance(lm_dir, str):
            raise BeamSearchError(f"{path}: lm_dir must be a string or null, got {lm_dir!r}")
        beam = BeamSearchConfig.from_dict(values.get("beam") or {}, where=f"{path}: beam")
        level_beams = (level_beams_from_dict(values["levels"], beam, where=f"{path}: levels")
                       if values.get("levels") is not None else None)
        try:
            return cls(decoder=values.get("decoder", "beam"), beam=beam, lm_dir=lm_dir, tuned=values.get("tuned"),
                       level_beams=level_beams)
        except BeamSearchError as error:
            raise BeamSearchError(f"{path}: {error}") from None


LEVEL_KEY = re.compile(r"0|[1-9][0-9]*")   # a level index as a JSON key: "3", not "03" or "³"


def _check_level_beams(level_beams: Mapping[int, BeamSearchConfig], beam: BeamSearchConfig) -> None:
    if not isinstance(level_beams, Mapping):
        raise BeamSearchError(f"per-level settings must be a mapping of level index to settings, got {level_beams!r}")
    for level, config in level_beams.items():
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
            raise BeamSearchError(f"per-level settings: level must be an int >= 0, got {level!r}")
        if not isinstance(config, BeamSearchConfig):
            raise BeamSearchError(f"per-level settings of level {level}: expected a BeamSearchConfig, got {config!r}")
        if config.lexicon != beam.lexicon:
            raise BeamSearchError(f"per-level settings of level {level}: lexicon {config.lexicon} differs from the "
                                  f"default's {beam.lexicon} (one LM and lexicon serve every level)")


def level_beams_to_dict(level_beams: Mapping[int, BeamSearchConfig]) -> dict:
    """``{level: BeamSearchConfig}`` as JSON: ``{"3": {...}}`` (keys are level indices as strings)."""
    return {str(int(level)): config.to_dict() for level, config in sorted(level_beams.items())}


def level_beams_from_dict(values: Any, beam: BeamSearchConfig, where: str) -> dict[int, BeamSearchConfig]:
    """Reads `level_beams_to_dict` output; a bad key or value is a `BeamSearchError` naming ``where``."""
    if not isinstance(values, Mapping):
        raise BeamSearchError(f"{where}: must be an object of level index to settings, got {values!r}")
    level_beams = {}
    for key, config in values.items():
        if not isinstance(key, str) or not LEVEL_KEY.fullmatch(key):
            raise BeamSearchError(f"{where}: key {key!r} is not a level index (expected e.g. \"3\")")
        level_beams[int(key)] = BeamSearchConfig.from_dict(config, where=f"{where}: {key}")
    try:
        _check_level_beams(level_beams, beam)
    except BeamSearchError as error:
        raise BeamSearchError(f"{where}: {error}") from None
    return level_beams


class LevelDecoders:
    """The beam decoder of every level: one LM and trie, each level with its own settings where it has
    them (`DecoderSettings.level_beams`), else the default's.

    Not thread-safe (nor is a `BeamDecoder`): give each thread its own, or hold a lock.

    Args:
        default: The `BeamDecoder` with the default settings (it loads the LM once).
        level_beams: ``{level: BeamSearchConfig}``; None = the default at every level.
        overrides: `BeamSearchConfig` fields set at every level, e.g. ``{"beam_width": 8}`` from a flag.

    Example:
        >>> decoders = LevelDecoders(BeamDecoder(pieces, blank_id, settings.beam, lm=lm), settings.level_beams)
        >>> decoders[3].decode(log_probs_at_level_3).text   # doctest: +SKIP
    """

    def __init__(self, default: BeamDecoder, level_beams: Optional[Mapping[int, BeamSearchConfig]] = None,
                 overrides: Optional[Mapping[str, Any]] = None):
        overrides = dict(overrides or {})
        self.default = default
        self._by_level = {}
        for level, config in (level_beams or {}).items():
            config = dataclasses.replace(config, **overrides)
            if config != default.config:
                try:
                    self._by_level[int(level)] = default.with_config(**dataclasses.asdict(config))
                except BeamSearchError as error:
                    raise BeamSearchError(f"level {level}'s decoder settings: {error}") from None

    def __getitem__(self, level: int) -> BeamDecoder:
        return self._by_level.get(int(level), self.default)

    @property
    def per_level(self) -> bool:
        """Whether some level decodes with settings other than the default's."""
        return bool(self._by_level)

    def configs(self) -> dict[int, BeamSearchConfig]:
        """The settings of the levels that have their own."""
        return {level: decoder.config for level, decoder in sorted(self._by_level.items())}
