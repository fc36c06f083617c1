#!/usr/bin/env bash
# Session 23 (train/results/cpu-x4 section 18), from the work folder, each evaluation alone (nothing else running):
# mini of the session's start stored as int8 (s23/uint8), and run V as it would ship (int8; mini's lexicon and
# weights), on the held-out Kokoro voices and the real-speech clips at 1, 4, 8 and 16 steps.
set -euo pipefail
W=/work/main
export PYTHONPATH=$W
python $W/train/ship_mini.py $W/asr/mini/model --int8 --out s23/uint8/model
python $W/train/ship_mini.py s23/jointV/model --int8 --out s23/vint8/model --ctc-weight 2 \
    --lexicon $W/asr/mini/model/lexicon.tsv.gz --lexicon-weights 1.25,7,-40,0.2
for m in uint8 vint8; do
    python -m asr.evaluate --manifest kokoro-test/test.tsv --model s23/$m/model --steps 1,4,8,16 --ctc --quiet \
        --threads 2 > s23/$m-kokoro.txt
    python -m asr.evaluate --manifest real-speech/manifest.tsv --model s23/$m/model --steps 1,4,8,16 --ctc --quiet \
        --threads 2 > s23/$m-real.txt
done
