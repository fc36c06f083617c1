#!/usr/bin/env bash
# Session 22, run U (train/results/cpu-x4 section 17), from the work folder: run T's mix (session 20-21 clips; the
# Kokoro plan has 220 more clips since) plus 2200 clips of a new engine, Piper's VITS voice "joe"
# (make_data.py --engines piper; 200 more clips of it held out as a check), every loss from mini, bfloat16 autocast.
# s22/base holds mini as shipped at the session's start with its encoder file as it was then (the position table
# stored), so that the whisper-frame cache of runs S and T (keyed by the encoder's weights) is reused.
set -euo pipefail
W=/work/main
export PYTHONPATH=$W
python $W/train/make_data.py --out s22-piper --train 2400 --test 0 --engines piper --seed 22 --workers 2 \
    --exclude kokoro-test/test.tsv real-speech/manifest.tsv
tail -n 200 s22-piper/train.tsv > s22-piper/dev.tsv
python $W/train/make_mix.py s22/mixU.tsv s20-kokoro/train.tsv s20-kperturb/train.tsv s20-pico/train.tsv \
    s21-pperturb/train.tsv s20-ffh/train.tsv s21-fperturb/train.tsv s22-piper/train.tsv:1:2200
python -m asr.train --manifest s22/mixU.tsv --out s22/jointU --model s22/base/model --ctc-train-head --batch-size 8 \
    --lr 2e-4 --warmup 30 --pad-weight 0.1 --seed 22 --threads 2 --steps 1500 --cache-dir frames-trim \
    --autocast bfloat16 --save-every 250
