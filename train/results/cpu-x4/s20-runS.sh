#!/usr/bin/env bash
# Session 20, run S (train/results/cpu-x4 section 15), from the work folder; the evaluation sets from
# train/make_eval_sets.sh in kokoro-test/ and real-speech/.
set -euo pipefail
W=/work/main
export PYTHONPATH=$W
EX="kokoro-test/test.tsv real-speech/manifest.tsv"
# new Kokoro clips: training voices and blends, new sentences (stopped after 996 clips, ~45 min with both cores)
python $W/train/make_data.py --out s20-kokoro --train 4000 --test 0 --engines kokoro,kokoro-blend --seed 20 --workers 2 --exclude $EX
python $W/train/make_data.py --out s20-pico --train 1500 --test 0 --engines pico --workers 2 --seed 20 --max-words 45 --exclude $EX
python $W/train/make_data.py --out s20-ffh --train 600 --test 0 --engines flite,festival,hibari --workers 2 --seed 21 --max-words 45 --exclude $EX
python $W/train/perturb_data.py s20-kokoro/train.tsv --out s20-kperturb --copies 2 --seed 20 --workers 2
python $W/train/make_mix.py s20/mixS.tsv s20-kokoro/train.tsv s20-kperturb/train.tsv s20-pico/train.tsv:1:750 s20-ffh/train.tsv:1:300
python -m asr.train --manifest s20/mixS.tsv --out s20/jointS --model $W/asr/mini/model --ctc-train-head --batch-size 8 \
    --lr 2e-4 --warmup 30 --pad-weight 0.1 --seed 20 --threads 2 --steps 3000 --cache-dir frames-trim --time-budget 3000
