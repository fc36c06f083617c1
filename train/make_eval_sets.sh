#!/usr/bin/env bash
# The two evaluation sets that train/results scores every small model on, rebuilt from what the repository holds:
#   - real-speech/manifest.tsv: 75 clips of real human speech (6 min), fetched from pinned PyPI/Debian archives,
#     every clip's SHA-256 checked (train/fetch_real_speech.py);
#   - kokoro-test/test.tsv: 120 clips (0.19 h) of Kokoro-82M's four held-out voices, synthesised from the committed
#     job list train/kokoro-test.jobs.jsonl.gz (texts, voices, speeds, noise seeds), so the sentences do not depend
#     on which text packages this machine has (Debian's flite examples change the corpus, and so a fresh plan).
#
#   bash train/setup_kokoro.sh && bash train/make_eval_sets.sh [DIR]     # DIR default data/eval; ~5 min on 2 cores
#
# Kokoro's int8 model gives the same bytes for a job on the same machine, but not across CPUs: on an AVX-512 machine
# the Kokoro set scored `mini` ~1 point of WER worse than the AVX2-made files its results were measured on
# (train/results/cpu-x4 section 15). Compare models on the same files.
set -euo pipefail
DIR=${1:-data/eval}
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
"$PYTHON" "$here/fetch_real_speech.py" "$DIR/real-speech"
"$PYTHON" "$here/make_data.py" --jobs "$here/kokoro-test.jobs.jsonl.gz" --out "$DIR/kokoro-test" --workers "${WORKERS:-2}"
