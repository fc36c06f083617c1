#!/usr/bin/env bash
# Session 23 (train/results/cpu-x4 section 18), from the work folder, on the session's second machine (the first, with
# run V, was shut down before run V was scored): the evaluation sets rebuilt (train/make_eval_sets.sh), then each
# evaluation alone, nothing else running. Steps 1-3 ran before --draw existed, with the exact draw (the only one
# then): --draw exact reproduces them.
# 1. mini as shipped at the session's start (run U, float16) and the same weights stored as int8 (--out: not shipped
#    yet), on the same files, at 1, 4, 8 and 16 steps with the CTC head;
# 2. import asr + asr.load, three fresh processes each (s23-coldload.txt);
# 3. after shipping the int8 copy (ship_mini.py s23/uint8/model --int8 --eval-real ... --eval-kokoro ...), the
#    shipped mini read position by position (--no-lexicon).
set -euo pipefail
W=/work/main
export PYTHONPATH=$W
bash $W/train/setup_kokoro.sh && bash $W/train/make_eval_sets.sh .
mkdir -p s23
python $W/train/ship_mini.py $W/asr/mini/model --int8 --out s23/uint8/model
for m in fp16:$W/asr/mini/model uint8:s23/uint8/model; do
    n=${m%%:*}; d=${m#*:}
    python -m asr.evaluate --manifest kokoro-test/test.tsv --model $d --steps 1,4,8,16 --ctc --quiet --threads 2 \
        --draw exact > s23/$n-kokoro.txt
    python -m asr.evaluate --manifest real-speech/manifest.tsv --model $d --steps 1,4,8,16 --ctc --quiet --threads 2 \
        --draw exact > s23/$n-real.txt
done
for m in $W/asr/mini/model s23/uint8/model; do
    for i in 1 2 3; do
        python -c "import time; t = time.perf_counter(); import asr; t1 = time.perf_counter(); asr.load('$m', device='cpu')
print('$(basename $(dirname $m))', f'import {t1 - t:.2f} s, load {time.perf_counter() - t1:.2f} s, total {time.perf_counter() - t:.2f} s')" 2>/dev/null
    done
done > s23/coldload.txt
python $W/train/ship_mini.py s23/uint8/model --int8 --eval-real s23/uint8-real.txt --eval-kokoro s23/uint8-kokoro.txt
for s in real:real-speech/manifest.tsv kokoro:kokoro-test/test.tsv; do
    python -m asr.evaluate --manifest ${s#*:} --model mini --steps 1,4,8,16 --quiet --threads 2 --no-lexicon \
        --draw exact > s23/nolexicon-${s%%:*}.txt
done
# 4. with DenoiseOptions.draw (new; asr.load: "cdf" for mini on the CPU): the default reading with the cdf draw,
#    exact and cdf alternately at 8 steps (with the CTC head's RTFx as the machine's pace), and --no-lexicon.
python -m asr.evaluate --manifest kokoro-test/test.tsv --model mini --steps 1,4,8,16 --ctc --quiet --threads 2 \
    > s23/cdf-kokoro.txt
python -m asr.evaluate --manifest real-speech/manifest.tsv --model mini --steps 1,4,8,16 --ctc --quiet --threads 2 \
    > s23/cdf-real.txt
for i in 1 2; do
    for d in exact cdf; do
        python -m asr.evaluate --manifest real-speech/manifest.tsv --model mini --steps 8 --ctc --quiet --threads 2 \
            --draw $d > s23/ab-$d-$i.txt
    done
done
for s in real:real-speech/manifest.tsv kokoro:kokoro-test/test.tsv; do
    python -m asr.evaluate --manifest ${s#*:} --model mini --steps 1,4,8,16 --quiet --threads 2 --no-lexicon \
        > s23/cdf-nolexicon-${s%%:*}.txt
done
# 5. bfloat16 autocast (the default here) against float32, alternately, real clips at 8 steps.
for i in 1 2; do
    for b in 1 0; do
        ASR_CPU_BF16=$b python -m asr.evaluate --manifest real-speech/manifest.tsv --model mini --steps 8 --ctc --quiet \
            --threads 2 > s23/bf16ab-$b-$i.txt
    done
done
