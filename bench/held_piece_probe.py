"""Probe: the lexicon beam search with every word also spelled with its last piece doubled.

flashlight's lexicon decoder ends a word on the frame that first reads its last piece; at the trie's
root it can then read only blank (our silence token) or start a word, because it expects spellings to
end in a silence piece, which SentencePiece spellings lack. So a last piece the model holds for
several frames is charged as blanks, and a one-piece word (BPE's ``▁r``) held for three frames reads
"r r". Inserting each word a second time with its last piece doubled lets the hold stay on a trie node.
This script measures that on a trained run without changing the product: it patches
`dsnn_keras.beam_search.BeamDecoder` in this process only and runs `dsnn_keras.evaluate.tune_decoder`
(weights grid as `dsnn-eval --tune`, speed stage off: width 32, threshold 25, token beam 8, no skip).

Not in the product (2026-12-06): with the doubled spellings the search is not repeatable on an
untrained model's near-uniform outputs (candidate order among equal scores, which flashlight breaks by
LM-state address); see docs/results.md, "Characters against BPE 64, and a held last piece".

Usage:
    python bench/held_piece_probe.py RUN_DIR DATA_DIR OUT_DIR [--plain]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def _patch() -> None:
    from dsnn_keras import beam_search

    original = beam_search.BeamDecoder.__init__

    def init(self, pieces, blank_id, config=beam_search.BeamSearchConfig(), lm=None, hotwords=(),
             hotword_weight=0.0):
        original(self, pieces, blank_id, config, lm, hotwords, hotword_weight)
        if not self.uses_lm:
            return
        spellings = dict(lm.lexicon)
        for phrase in self.hotwords:
            for word in phrase.split():
                spellings.setdefault(word, beam_search.spell_with_pieces(word, self.pieces))
        index = {piece: i for i, piece in enumerate(self.pieces)}
        start = self._kenlm.start(False)
        for i, word in enumerate(self.words):
            spelling = [index[piece] for piece in spellings[word]]
            _, score = self._kenlm.score(start, i)
            self._trie.insert(spelling + spelling[-1:], i, score)
        self._trie.smear(self._fl.SmearingMode.MAX)

    beam_search.BeamDecoder.__init__ = init


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("data_dir")
    parser.add_argument("out_dir", help="where decoder.json goes (the run is not touched)")
    parser.add_argument("--plain", action="store_true", help="the product's search, for the baseline")
    args = parser.parse_args(argv)
    if not args.plain:
        _patch()
    from dsnn_keras.evaluate import tune_decoder

    tune_decoder(args.run_dir, args.data_dir, split="dev", level="all", out_dir=args.out_dir,
                 beam_thresholds=(25.0,), token_beams=(8,), blank_skips=(None,), beam_widths=(32,))
    settings = json.loads((pathlib.Path(args.out_dir) / "decoder.json").read_text())
    for entry in settings["tuned"]["levels"]:
        print(f"level {entry['level']}: greedy {entry['greedy_wer']:.2%}  beam {entry['best_wer']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
