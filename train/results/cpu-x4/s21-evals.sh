#!/usr/bin/env bash
# Session 21's evaluations (train/results/cpu-x4 section 16), from the work folder, one at a time, nothing else running.
set -euo pipefail
export PYTHONPATH=/work/main
cd /root/asr-work
ev() { python -m asr.evaluate --manifest "$1" --model "$2" --steps 1,4,8,16 --ctc --quiet --threads 2 > "$3" 2>&1; tail -1 "$3"; }
# 1. mini with the new lexicon (general English counts and 19 000 word pairs; weights from the dev grid)
ev real-speech/manifest.tsv s21/miniL s21/miniL-real.txt
ev kokoro-test/test.tsv s21/miniL s21/miniL-kokoro.txt
# 2. run T with the new lexicon
rm -rf s21/T && cp -r s21/jointT/model s21/T && cp s21/miniL/lexicon.tsv.gz s21/T/ && python - <<'PY'
import json
a = json.load(open("s21/miniL/speech.json")); p = "s21/T/speech.json"; b = json.load(open(p))
b["lexicon"], b["ctc_weight"] = a["lexicon"], a["ctc_weight"]
json.dump(b, open(p, "w"), indent=1)
PY
ev real-speech/manifest.tsv s21/T s21/T-real.txt
ev kokoro-test/test.tsv s21/T s21/T-kokoro.txt
