#!/usr/bin/env bash
# The main job end to end on a corpus the project generates itself:
#   synthesize speech -> Beam feature preparation -> DSNN training -> evaluation -> one .tflite -> transcription.
# Usage: scripts/demo.sh [OUT_DIR]   (the dsnn-* commands must be on PATH; `make demo` arranges that)
set -euo pipefail
OUT="${1:-demo}"
CONFIG="${DSNN_DEMO_CONFIG:-configs/tiny.yaml}"
UTTERANCES="${DSNN_DEMO_UTTERANCES:-160}"
mkdir -p "$OUT"
step() { echo; echo "==> $*" >&2; }

step "1/6 synthesize a spoken corpus ($UTTERANCES utterances)"
dsnn-synth --out "$OUT/corpus" --num_utterances "$UTTERANCES" --seed 1 --overwrite

step "2/6 prepare features, tokenizer and statistics with Apache Beam (DirectRunner)"
dsnn-prepare --input "train=$OUT/corpus/train" --input "dev=$OUT/corpus/dev" --input "test=$OUT/corpus/test" \
  --out "$OUT/data" --overwrite

step "3/6 train one DSNN model over all sparsity levels ($CONFIG)"
dsnn-train --data "$OUT/data" --config "$CONFIG" --out "$OUT/run"

step "4/6 evaluate every sparsity level on the test split"
dsnn-eval "$OUT/run" --data "$OUT/data" --split test

step "5/6 export ONE .tflite file with a runtime sparsity_level input"
dsnn-export "$OUT/run" --out "$OUT/model.tflite"

step "6/6 transcribe a test utterance at every level from the .tflite file"
WAV="$(find "$OUT/corpus/test" -name '*.flac' | sort | head -n 1)"
for level in 0 1 2 3; do
  dsnn-transcribe "$OUT/model.tflite" "$WAV" --level "$level"
done
echo >&2; echo "demo finished: outputs in $OUT/" >&2
