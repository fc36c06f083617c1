#!/usr/bin/env bash
# Session 23, run V (train/results/cpu-x4 section 18), from the work folder: more room on the audio side. Run U
# (mini as shipped at the session's start) grows two more attention blocks at the projector's end (appended as the
# identity: --projector-attention 4), and trains with every loss at run U's settings on run U's mix plus 1500 clips
# of the second Piper batch (s22-piper2, made at the end of session 22: new sentences, the same voice "joe").
# s23/base holds mini with its encoder file of session 21 (position table stored) so that the whisper-frame cache
# (keyed by the encoder's weights) is reused; the weights are the same as the shipped ones.
set -euo pipefail
W=/work/main
export PYTHONPATH=$W
mkdir -p s23/base
cp -r s22/U s23/base/model && cp -r s22/base/whisper-tiny-en s23/base/
python $W/train/make_mix.py s23/mixV.tsv s20-kokoro/train.tsv s20-kperturb/train.tsv s20-pico/train.tsv \
    s21-pperturb/train.tsv s20-ffh/train.tsv s21-fperturb/train.tsv s22-piper/train.tsv:1:2200 \
    s22-piper2/train.tsv:1:1500
python -m asr.train --manifest s23/mixV.tsv --out s23/jointV --model s23/base/model --projector-attention 4 \
    --ctc-train-head --batch-size 8 --lr 2e-4 --warmup 30 --pad-weight 0.1 --seed 23 --threads 2 --steps 1600 \
    --cache-dir frames-trim --autocast bfloat16 --save-every 250
