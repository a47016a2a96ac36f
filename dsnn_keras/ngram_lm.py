"""Word n-gram language model of the training transcripts (ARPA) and the lexicon the beam search uses.

KenLM's estimator (``lmplz``) is not installable from PyPI, so the ARPA file is written here from
counts, with **interpolated absolute discounting** (Ney, Essen & Kneser 1994), a standard smoothing
that is exact to write as an ARPA back-off model:

    P(w | h) = max(c(h w) - D_n, 0) / c(h) + gamma(h) * P(w | h'),   gamma(h) = D_n * N1+(h .) / c(h)

where ``h'`` drops the oldest word of ``h``, ``c(h) = sum_w c(h w)``, ``N1+(h .)`` is the number of
distinct words seen after ``h`` and ``D_n = n1 / (n1 + 2 n2)`` from the count-of-counts of order n
(0.5 where that is undefined). The unigram level interpolates with the uniform distribution over the
vocabulary (words, ``</s>`` and ``<unk>``), so every word, ``<unk>`` included, has a probability.
An ARPA entry holds the interpolated probability of each seen n-gram and, for each seen history,
``gamma(h)`` as its back-off weight: an unseen ``(h, w)`` then gets exactly ``gamma(h) P(w | h')``,
so every conditional distribution sums to one (tested). Pure Python; no TensorFlow.

The lexicon maps each training word to its spelling in the tokenizer's pieces
(``sentencepiece.encode(word)``), so the decoder only forms words the LM knows.

`LmBundle` is what travels: written to ``DIR/lm/`` by ``dsnn-prepare`` (the counting is a Beam step)
or ``dsnn-lm``, and inside an exported ``.tflite`` as the ``dsnn_lm`` metadata buffer (gzip JSON).

Example:
    >>> bundle = build_lm(["yes no", "no no yes"], order=2, spell=lambda w: ["\u2581" + w])
    >>> print(bundle.arpa.splitlines()[1:4])
    ['ngram 1=5', 'ngram 2=6', '']
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import gzip
import json
import math
import os
import re
import pathlib
import shutil
import tempfile
from typing import Callable, Collection, Iterable, Mapping, Optional, Sequence

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LM_DIR = "lm"
ARPA_FILE = "words.arpa"
LEXICON_FILE = "lexicon.txt"
INFO_FILE = "lm.json"
BUNDLE_FORMAT = 1
DEFAULT_ORDER = 3
_LOG10_ZERO = -99.0   # ARPA's conventional log10 probability of <s> (never predicted)


class LanguageModelError(DsnnError, ValueError):
    """A bad LM argument, or an LM directory or buffer that cannot be used (the message names it)."""


def sentence_tokens(text: str) -> list[str]:
    """``<s> w1 ... wn </s>`` of one normalised transcript (whitespace-separated words)."""
    return [BOS, *text.split(), EOS]


def count_ngrams(sentences: Iterable[str], order: int) -> collections.Counter:
    """Counts every n-gram of orders 1..``order`` of each sentence padded with ``<s>``/``</s>``.

    N-grams whose last word is ``<s>`` are never predicted and not counted.

    Args:
        sentences: Normalised transcripts.
        order: The LM order (>= 1).

    Returns:
        ``Counter`` of word tuples.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise LanguageModelError(f"LM order must be an int >= 1, got {order!r}")
    counts: collections.Counter = collections.Counter()
    for text in sentences:
        words = sentence_tokens(text)
        if len(words) == 2:
            continue   # an empty transcript says nothing about words
        for end in range(1, len(words)):
            for n in range(1, min(order, end + 1) + 1):
                counts[tuple(words[end - n + 1:end + 1])] += 1
    return counts


def _discount(counts: Mapping[tuple, int], n: int) -> float:
    n1 = sum(1 for gram, c in counts.items() if len(gram) == n and c == 1)
    n2 = sum(1 for gram, c in counts.items() if len(gram) == n and c == 2)
    if n1 == 0 or n2 == 0:
        return 0.5
    return min(max(n1 / (n1 + 2.0 * n2), 0.05), 0.95)


def arpa_from_counts(counts: Mapping[tuple, int], order: int) -> str:
    """Writes the interpolated absolute-discounting model of ``counts`` (see the module docstring).

    Args:
        counts: N-gram counts from `count_ngrams` (orders 1..``order``).
        order: The LM order.

    Returns:
        The ARPA text.

    Raises:
        LanguageModelError: no word was counted.
    """
    words = sorted({gram[0] for gram in counts if len(gram) == 1} - {EOS})
    if not words:
        raise LanguageModelError("no training words to build the LM from (are the transcripts empty?)")
    vocab = [*words, EOS, UNK]
    discounts = {n: _discount(counts, n) for n in range(1, order + 1)}
    # Per history: total count and number of distinct followers.
    context_total: dict[tuple, int] = collections.defaultdict(int)
    context_types: dict[tuple, int] = collections.defaultdict(int)
    for gram, c in counts.items():
        context_total[gram[:-1]] += c
        context_types[gram[:-1]] += 1
    probs: dict[tuple, float] = {}
    total, types = context_total[()], context_types[()]
    gamma0 = discounts[1] * types / total
    for word in vocab:
        probs[(word,)] = max(counts.get((word,), 0) - discounts[1], 0.0) / total + gamma0 / len(vocab)
    backoff: dict[tuple, float] = {}
    for n in range(2, order + 1):
        for gram in sorted(g for g in counts if len(g) == n):
            history = gram[:-1]
            gamma = discounts[n] * context_types[history] / context_total[history]
            backoff[history] = gamma
            probs[gram] = (counts[gram] - discounts[n]) / context_total[history] + gamma * probs[gram[1:]]
    by_order: dict[int, list[tuple]] = collections.defaultdict(list)
    for gram in probs:
        by_order[len(gram)].append(gram)
    by_order[1].append((BOS,))
    lines = ["\\data\\"]
    lines += [f"ngram {n}={len(by_order[n])}" for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        for gram in sorted(by_order[n]):
            logp = _LOG10_ZERO if gram == (BOS,) else math.log10(probs[gram])
            line = f"{logp:.6f}\t{' '.join(gram)}"
            if n < order and gram in backoff:
                line += f"\t{math.log10(backoff[gram]):.6f}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


class ArpaModel:
    """A small reader of ARPA back-off models: `log10_prob` by the ARPA back-off rule.

    For checks and tests (the decoder queries the same file through KenLM).

    Args:
        text: The ARPA text.
    """

    def __init__(self, text: str):
        self.probs: dict[tuple, float] = {}
        self.backoffs: dict[tuple, float] = {}
        self.order = 0
        section = 0
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("ngram ") or line in ("\\data\\", "\\end\\"):
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1:line.index("-")])
                self.order = max(self.order, section)
                continue
            fields = line.split("\t")
            gram = tuple(fields[1].split())
            if len(gram) != section:
                raise LanguageModelError(f"ARPA line {raw!r} is not a {section}-gram")
            self.probs[gram] = float(fields[0])
            if len(fields) > 2:
                self.backoffs[gram] = float(fields[2])

    @property
    def vocabulary(self) -> list[str]:
        return sorted(gram[0] for gram in self.probs if len(gram) == 1)

    def log10_prob(self, history: Sequence[str], word: str) -> float:
        """log10 P(word | history) by the ARPA rule (unknown words are ``<unk>``)."""
        known = {gram[0] for gram in self.probs if len(gram) == 1}
        word = word if word in known else UNK
        history = tuple(h if h in known else UNK for h in history)[-(self.order - 1):] if self.order > 1 else ()
        penalty = 0.0
        while True:
            if history + (word,) in self.probs:
                return penalty + self.probs[history + (word,)]
            if not history:
                raise LanguageModelError(f"the ARPA model has no unigram for {word!r}")
            penalty += self.backoffs.get(history, 0.0)
            history = history[1:]


@dataclasses.dataclass(frozen=True)
class LmBundle:
    """A word LM and its lexicon: what ``dsnn-lm`` writes and what the ``.tflite`` carries.

    Args:
        arpa: The ARPA text (words; ``<s>``, ``</s>``, ``<unk>``).
        lexicon: Word -> its spelling in tokenizer pieces.
        info: How it was made (order, discounts, counts, sentences, command).
    """

    arpa: str
    lexicon: Mapping[str, tuple[str, ...]]
    info: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def order(self) -> int:
        return int(self.info.get("order", 0)) or ArpaModel(self.arpa).order

    def lexicon_text(self) -> str:
        """One ``word<TAB>piece piece ...`` line per word, sorted."""
        return "".join(f"{word}\t{' '.join(spelling)}\n" for word, spelling in sorted(self.lexicon.items()))

    def to_bytes(self) -> bytes:
        """gzip-compressed JSON ``{format, arpa, lexicon, info}`` (the ``dsnn_lm`` metadata buffer)."""
        payload = {"format": BUNDLE_FORMAT, "arpa": self.arpa,
                   "lexicon": {word: list(spelling) for word, spelling in sorted(self.lexicon.items())},
                   "info": dict(self.info)}
        return gzip.compress(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8"), mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "LM buffer") -> "LmBundle":
        """Reads `to_bytes` output.

        Raises:
            LanguageModelError: not gzip JSON of this format (the message names ``source``).
        """
        try:
            payload = json.loads(gzip.decompress(bytes(data)).decode("utf-8"))
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as error:
            raise LanguageModelError(f"{source}: not a gzip-compressed dsnn LM bundle ({error})") from None
        if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
            raise LanguageModelError(f"{source}: LM bundle format {payload.get('format') if isinstance(payload, dict) else None!r}; "
                                     f"this reader understands {BUNDLE_FORMAT}")
        lexicon = payload.get("lexicon")
        if (not isinstance(payload.get("arpa"), str) or not isinstance(lexicon, dict)
                or not all(isinstance(s, list) and s and all(isinstance(p, str) for p in s) for s in lexicon.values())):
            raise LanguageModelError(f"{source}: LM bundle needs 'arpa' (text) and 'lexicon' (word -> non-empty list of pieces)")
        return cls(payload["arpa"], {word: tuple(spelling) for word, spelling in lexicon.items()},
                   dict(payload.get("info") or {}))

    def write_dir(self, directory: str | os.PathLike) -> "fileio.AnyPath":
        """Writes ``words.arpa``, ``lexicon.txt`` and ``lm.json`` into ``directory``, replacing an old
        one only once the new one is complete (written beside it, then renamed).

        A remote ``directory`` (``gs://...``; `dsnn_keras.fileio`) has no directory rename: each file
        is written complete and renamed into place, ``lm.json`` last, so a reader never sees a partial
        file, but one that reads while the directory is being replaced may mix old and new files.
        """
        if not fileio.is_local(directory):
            for name, text in ((ARPA_FILE, self.arpa), (LEXICON_FILE, self.lexicon_text()),
                               (INFO_FILE, json.dumps(dict(self.info), indent=1) + "\n")):
                fileio.atomic_write(fileio.join(directory, name), text)
            return fileio.as_path(directory)
        directory = pathlib.Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
        try:
            (tmp / ARPA_FILE).write_text(self.arpa, encoding="utf-8")
            (tmp / LEXICON_FILE).write_text(self.lexicon_text(), encoding="utf-8")
            (tmp / INFO_FILE).write_text(json.dumps(dict(self.info), indent=1) + "\n", encoding="utf-8")
            old = None
            if directory.exists():
                old = directory.parent / f".{directory.name}.old.tmp"
                shutil.rmtree(old, ignore_errors=True)
                directory.rename(old)
            tmp.rename(directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def read_dir(cls, directory: str | os.PathLike) -> "LmBundle":
        """Reads a directory written by `write_dir`.

        Raises:
            LanguageModelError: a file is missing or a lexicon line is malformed (named).
        """
        directory = fileio.as_path(directory)   # local, or gs://... (tf.io.gfile)
        for name in (ARPA_FILE, LEXICON_FILE):
            if not fileio.isfile(fileio.join(directory, name)):
                raise LanguageModelError(f"LM directory {directory} has no {name} (write one with dsnn-lm --data DIR)")
        lexicon: dict[str, tuple[str, ...]] = {}
        for number, line in enumerate(fileio.read_text(fileio.join(directory, LEXICON_FILE)).splitlines(), 1):
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0] or not fields[1].split():
                raise LanguageModelError(f"{fileio.join(directory, LEXICON_FILE)}:{number}: expected "
                                         f"'word<TAB>piece piece ...', got {line!r}")
            lexicon[fields[0]] = tuple(fields[1].split())
        info_path = fileio.join(directory, INFO_FILE)
        info = json.loads(fileio.read_text(info_path)) if fileio.isfile(info_path) else {}
        return cls(fileio.read_text(fileio.join(directory, ARPA_FILE)), lexicon, info)


def build_lm_from_counts(counts: Mapping[tuple, int], order: int, spell: Callable[[str], Sequence[str]],
                         extra_info: Optional[Mapping[str, object]] = None) -> LmBundle:
    """The `LmBundle` of n-gram ``counts``: ARPA text and the lexicon of its words.

    Args:
        counts: From `count_ngrams` (or merged from several of them).
        order: The LM order.
        spell: Word -> its pieces (e.g. ``lambda w: sp.encode(w, out_type=str)``).
        extra_info: Added to ``info``.
    """
    arpa = arpa_from_counts(counts, order)
    words = sorted({gram[0] for gram in counts if len(gram) == 1} - {EOS, BOS})
    lexicon = {}
    for word in words:
        spelling = tuple(spell(word))
        if not spelling:
            raise LanguageModelError(f"the tokenizer spells word {word!r} with no piece")
        lexicon[word] = spelling
    info = {"order": order, "smoothing": "interpolated absolute discounting",
            "discounts": {str(n): round(_discount(counts, n), 6) for n in range(1, order + 1)},
            "words": len(words), "sentences": int(counts.get((EOS,), 0)),
            "ngrams": {str(n): sum(1 for g in counts if len(g) == n) for n in range(1, order + 1)},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **dict(extra_info or {})}
    return LmBundle(arpa, lexicon, info)


def build_lm(sentences: Iterable[str], order: int, spell: Callable[[str], Sequence[str]],
             extra_info: Optional[Mapping[str, object]] = None) -> LmBundle:
    """`build_lm_from_counts` of `count_ngrams` (``sentences``, ``order``)."""
    return build_lm_from_counts(count_ngrams(sentences, order), order, spell, extra_info)


# The ids `dsnn-prepare` gives the copies of an utterance: speed-perturbed (sp<f>-), augmented (aug<k>-)
# and repeated by a corpus weight (rep<r>-); pipeline.speed / augment / mixing.
_COPY_PREFIX = re.compile(r"^(?:(?:sp\d+(?:\.\d+)?|aug\d+|rep\d+)-)+")


def dataset_transcripts(data_dir: str | os.PathLike, split: str = "train", originals_only: bool = True) -> list[str]:
    """The transcripts of one split of a prepared dataset (only those fields of each record are parsed).

    Args:
        data_dir: A ``dsnn-prepare`` output directory.
        split: The split. Defaults to ``"train"``.
        originals_only: Leave out the copies ``dsnn-prepare`` writes of an utterance (speed-perturbed,
            augmented, repeated by a corpus weight: an id ``sp0.9-X``, ``aug1-X``, ``rep1-X`` whose
            ``X`` is in the split too), so each utterance's transcript counts once, as in the LM the
            preparation job counts. Defaults to True.
    """
    import tensorflow as tf

    from dsnn_keras.dataset import PreparedDataset

    dataset = PreparedDataset.from_dir(data_dir)
    if split not in dataset.split_names:
        raise LanguageModelError(f"{fileio.join(data_dir, 'dataset.json')} has no split {split!r} "
                                 f"(has {sorted(dataset.split_names)})")
    spec = {"transcript": tf.io.FixedLenFeature([], tf.string), "utt_id": tf.io.FixedLenFeature([], tf.string)}
    records = tf.data.TFRecordDataset(dataset.files(split)).map(
        lambda record: tf.io.parse_single_example(record, spec))
    pairs = [(r["utt_id"].decode("utf-8"), r["transcript"].decode("utf-8")) for r in records.as_numpy_iterator()]
    if not originals_only:
        return [text for _, text in pairs]
    ids = {utt_id for utt_id, _ in pairs}
    return [text for utt_id, text in pairs if not is_copy(utt_id, ids)]


def is_copy(utt_id: str, ids: Collection[str]) -> bool:
    """Whether ``utt_id`` names a copy ``dsnn-prepare`` wrote of another utterance among ``ids``.

    The pipeline writes (or rejects) an utterance together with all its copies, so a copy's original
    is in the same split; an id that merely looks like a copy (``sp1-0001`` with no ``0001``) is not one.

    Example:
        >>> is_copy("rep1-aug2-sp0.9-a1", {"a1"}), is_copy("sp1-0001", {"sp1-0001"})
        (True, False)
    """
    original = _COPY_PREFIX.sub("", utt_id)
    return original != utt_id and original in ids


def build_dataset_lm(data_dir: str | os.PathLike, order: int = DEFAULT_ORDER, split: str = "train",
                     out: Optional[str | os.PathLike] = None) -> pathlib.Path:
    """What ``dsnn-lm`` does: the LM and lexicon of a prepared dataset's ``split`` transcripts.

    Args:
        data_dir: A ``dsnn-prepare`` output directory.
        order: The n-gram order. Defaults to 3.
        split: The split whose transcripts are counted. Defaults to ``"train"`` (never dev or test:
            their WER would be flattered).
        out: Where to write. Defaults to ``DATA_DIR/lm`` (replaced only once the new one is complete).

    Returns:
        The directory written.

    Raises:
        LanguageModelError / DatasetError: a bad order, dataset or split.
    """
    from dsnn_keras.dataset import PreparedDataset

    dataset = PreparedDataset.from_dir(data_dir)
    tokenizer = dataset.tokenizer()
    bundle = build_lm(dataset_transcripts(data_dir, split), order,
                      lambda word: tokenizer.encode(word, out_type=str),
                      {"split": split, "source": str(data_dir), "tokenizer": str(dataset.tokenizer_path)})
    return bundle.write_dir(out if out is not None else fileio.join(data_dir, LM_DIR))
