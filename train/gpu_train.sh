#!/usr/bin/env bash
# Train the small model on the GPU machine of the `device` tool, in the same call as the benchmark.
#
#   here, once:    bash train/prepare_gpu_data.sh [SYNTH_DIR] [INIT_MODEL_DIR]
#                  (wheels into the ignored .whl/; .data/: the espeak job list, the tokenizer, optionally the other
#                  engines' clips of SYNTH_DIR as opus and a model to continue from; checks the 64 MiB)
#   device tool:   carry [".whl", ".data"] (64 MiB with the tracked tree: check `du -sb .whl .data`), command, beside
#                  the benchmark (as on 2026-11-27):
#                  T0=$(date +%s); bash train/gpu_train.sh install && (bash train/gpu_train.sh data &) && \
#                  BENCH_BUDGET_S=230 taskset -c 0,1 bash bench/gpu_run.sh; DEADLINE=$((T0 + 560)) bash train/gpu_train.sh train
#                  or training only (kind nvidia-h200, timeout_s 590):
#                  T0=$(date +%s); bash train/gpu_train.sh install && (bash train/gpu_train.sh data &) && \
#                  DEADLINE=$((T0 + 570)) TRAIN_ARGS="--profile-steps 5" bash train/gpu_train.sh train
#
# Phases:
#   install  the carried wheels into /tmp/site (bench/install_wheels.sh: once per machine)
#   data     synthesise the job list with the espeak-ng library of the espeakng-loader wheel on all cores but two
#            (the benchmark keeps cores 0-1), into /tmp/synth
#   train    wait for the data, then `python -m asr.train --model small` with the frames in GPU memory and
#            --time-budget up to $DEADLINE (epoch seconds); the exported model comes back as two tar files
#            ($OUT/small-backbone.tar, $OUT/small-rest.tar: projector, speech.json, tokenizer, log, stdout)
#
# A training step is ~9000 small ATen ops (forward, backward, AdamW): on the GPU it is launch-bound (0.2 s per step
# at batch 128 on an H200, ~10x its FLOPs), so a larger batch costs little more per step. BATCH (default 384) and LR
# (default 2e-3) set them. Memory: the frames of 41.5 k clips take 48 GB on the GPU, a step ~0.12 GB per clip of the
# batch (peak RSS of a CPU step: +1.0 GB at batch 8, +3.9 GB at 32), so 384 needs ~95 GB: ask for nvidia-h200
# (BATCH=192 on an 80 GB H100). PAD_WEIGHT (default 0.1: padding is ~80 % of the canvas; on 64 memorised clips 0.1
# learned the transcript positions faster than 1.0, train/results/small-gpu1/diagnosis.md). TRAIN_ARGS adds
# options, e.g. "--model .data/init" to continue from an exported model, "--profile-steps 5".
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/train-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
SYNTH=${SYNTH:-/tmp/synth}
RUN=${RUN:-/tmp/runs/small-gpu}

case "${1:-}" in
install)
    bash bench/install_wheels.sh
    ;;
data)
    cores=$(nproc)
    pin=()  # cores 0-1 stay free for the benchmark (or the training process)
    if [ "$cores" -gt 4 ] && command -v taskset >/dev/null; then pin=(taskset -c "2-$((cores - 1))"); fi
    "${pin[@]}" python3 train/make_data.py --jobs "${JOBS:-.data/jobs.jsonl.gz}" --out "$SYNTH" \
        --workers $((cores > 4 ? cores - 2 : cores)) >"$SYNTH.log" 2>&1
    echo $? >"$SYNTH.rc"
    ;;
train)
    while [ ! -f "$SYNTH.rc" ]; do sleep 2; done
    echo "make_data exit status $(cat "$SYNTH.rc")"
    tail -c 2000 "$SYNTH.log" | tr '\r' '\n' | tail -4
    manifest=/tmp/train.tsv
    awk -v d="$SYNTH/" -F'\t' '{print d $1 "\t" $2}' "$SYNTH/train.tsv" >"$manifest"
    if [ -f .data/extra/train.tsv ]; then  # the other engines' voices, 4 times each (they are few)
        for _ in 1 2 3 4; do awk -v d="$PWD/.data/extra/" -F'\t' '{print d $1 "\t" $2}' .data/extra/train.tsv; done >>"$manifest"
    fi
    echo "manifest: $(wc -l <"$manifest") rows"
    mkdir -p "$(dirname "$RUN")"
    budget=$((${DEADLINE:-$(($(date +%s) + 300))} - $(date +%s) - 15))
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of extra options
    python3 -m asr.train --manifest "$manifest" --out "$RUN" --model small --tokenizer .data/tokenizer \
        --canvas-length 160 --device cuda --cache-dir memory --batch-size "${BATCH:-384}" --lr "${LR:-2e-3}" --warmup 100 \
        --pad-weight "${PAD_WEIGHT:-0.1}" --save-every 500 --log-every 10 --time-budget "$budget" --quiet ${TRAIN_ARGS:-} \
        2>&1 | tee "$RUN.stdout"
    rc=${PIPESTATUS[0]}
    tar -C "$RUN/model" -cf "$OUT/small-backbone.tar" backbone
    cp "$RUN.stdout" "$RUN/model/train.stdout"
    cp "$RUN/log.jsonl" "$RUN/model/log.jsonl"
    if [ -f "$RUN/profile.txt" ]; then cp "$RUN/profile.txt" "$RUN/model/profile.txt"; fi
    tar -C "$RUN/model" -cf "$OUT/small-rest.tar" --exclude backbone .
    echo "asr.train exit status $rc"
    exit "$rc"
    ;;
*)
    echo "usage: $0 install|data|train" >&2
    exit 2
    ;;
esac
