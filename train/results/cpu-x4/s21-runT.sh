#!/usr/bin/env bash
# Session 21, run T (train/results/cpu-x4 section 16), from the work folder: session 20's clips (all 1288 Kokoro
# clips, 996 of them with two variants; 1500 Pico; 600 flite/festival/hibari) plus new variants of the Pico (one
# each) and flite/festival/hibari clips (two each), every loss from mini, bfloat16 autocast.
set -euo pipefail
W=/work/main
export PYTHONPATH=$W
python $W/train/perturb_data.py s20-pico/train.tsv --out s21-pperturb --copies 1 --seed 21 --workers 2
python $W/train/perturb_data.py s20-ffh/train.tsv --out s21-fperturb --copies 2 --seed 22 --workers 2
python $W/train/make_mix.py s21/mixT.tsv s20-kokoro/train.tsv s20-kperturb/train.tsv s20-pico/train.tsv \
    s21-pperturb/train.tsv s20-ffh/train.tsv s21-fperturb/train.tsv
python -m asr.train --manifest s21/mixT.tsv --out s21/jointT --model $W/asr/mini/model --ctc-train-head --batch-size 8 \
    --lr 2e-4 --warmup 30 --pad-weight 0.1 --seed 21 --threads 2 --steps 1500 --cache-dir frames-trim \
    --autocast bfloat16  # (a --time-budget run fitted its steps while other work ran beside it: 746 steps)
