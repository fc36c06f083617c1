#!/usr/bin/env bash
# Train the small model on the GPU machine of the `device` tool, in the same call as the benchmark.
#
#   here, once:    bash train/prepare_gpu_data.sh [SYNTH_DIR] [INIT_MODEL_DIR]
#                  (wheels into the ignored .whl/; .data/: the espeak job list, the tokenizer, optionally the other
#                  engines' clips of SYNTH_DIR as opus and a model to continue from; checks the 64 MiB)
#   device tool:   carry [".whl", ".data"] (64 MiB with the tracked tree: check `du -sb .whl .data`), kind
#                  nvidia-h200 (or an H100: the batch follows the GPU's memory), timeout_s 590, command:
#                  T0=$(date +%s) LR=5e-4 TRAIN_ARGS="--model mini --canvas aligned --profile-steps 5" bash train/gpu_train.sh run
#                  (continues the shipped model, which is in the tree, at a lower peak rate than from scratch's 2e-3:
#                  a guess, not measured yet; from scratch: TRAIN_ARGS="--canvas aligned --ctc-steps 100")
#                  or beside the benchmark (as on 2026-11-27, a fresh machine):
#                  T0=$(date +%s); bash train/gpu_train.sh install && (bash train/gpu_train.sh data &) && \
#                  BENCH_BUDGET_S=230 taskset -c 0,1 bash bench/gpu_run.sh; DEADLINE=$((T0 + 560)) bash train/gpu_train.sh train
#
# Phases:
#   install  the carried wheels into /tmp/site (bench/install_wheels.sh: once per machine)
#   data     synthesise the job list with the espeak-ng library of the espeakng-loader wheel on all cores but two
#            (the benchmark keeps cores 0-1) into /tmp/synth (make_data appends each clip's row to train.tsv as it is
#            made), then write the training manifest $MANIFEST and last the marker /tmp/synth.rc
#   train    `python -m asr.train --model small` at once: it computes the whisper frames (kept in GPU memory) of the
#            clips as they are made (--prefetch), starts training when the marker exists, and fits its steps to
#            --time-budget up to $DEADLINE (epoch seconds); the exported model comes back as two tar files
#            ($OUT/small-backbone.tar, $OUT/small-rest.tar: projector, speech.json, tokenizer, log, stdout)
#   run      install, data in the background, train (DEADLINE = T0 + 570)
#
# A training step is ~9000 small ATen ops (forward, backward, AdamW): on the GPU it is launch-bound (0.2 s per step
# at batch 128 on an H200, ~10x its FLOPs), so a larger batch costs little more per step. Measured 2026-11-27 on an
# H200 (train/results/gpu-aligned): --canvas aligned at batch 384, 0.59 s per step (0.08 s for a CTC-only step of
# --ctc-steps); the call's first ~70 s go to the model and the whisper frames. A second call that resumes the run
# (TRAIN_ARGS="... --resume" on the still-warm machine) computes every frame again (frames live in GPU memory): of
# its 230 s budget only ~45 s trained, so one long call is worth more than two short ones. BATCH (default 384 on a
# GPU with >= 120 GB, else 192) and LR (default 2e-3) set them. Memory: the frames of 41.5 k clips take 48 GB on the
# GPU, a step ~0.12 GB per clip of the batch (peak RSS of a CPU step: +1.0 GB at batch 8, +3.9 GB at 32), so 384
# needs ~95 GB (an H200) and 192 ~71 GB (an 80 GB H100). DEVICE (default cuda) and SKIP_INSTALL=1 let the same script
# run on a CPU for a dry run with a small JOBS list (tests/test_gpu_train.py does, with TOKENIZER=byte).
# PAD_WEIGHT (default 0.1: padding is ~80 % of the canvas; on 64 memorised clips 0.1 learned the transcript
# positions faster than 1.0, train/results/small-gpu1/diagnosis.md). TRAIN_ARGS adds
# options, e.g. "--model .data/init" to continue from an exported model, "--profile-steps 5".
set -uo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"  # for the run phase's calls of the other phases
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/train-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
SYNTH=${SYNTH:-/tmp/synth}
RUN=${RUN:-/tmp/runs/small-gpu}

default_batch() {  # 384 clips where the GPU has room (H200: ~95 GB with the frames), else 192 (H100 80 GB)
    local mib
    mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
    if [ "${mib:-0}" -ge 120000 ]; then echo 384; else echo 192; fi
}

MANIFEST=${MANIFEST:-/tmp/train.tsv}
EXTRA=${EXTRA:-.data/extra}  # the other engines' clips (train/prepare_gpu_data.sh), if carried

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
    status=$?
    # the training manifest: the synthesised clips, then the carried clips EXTRA_REPEAT times (default 4: they are few)
    awk -v d="$SYNTH/" -F'\t' '{print d $1 "\t" $2}' "$SYNTH/train.tsv" >"$MANIFEST.tmp"
    if [ -f "$EXTRA/train.tsv" ]; then
        extra=$(cd "$EXTRA" && pwd)
        for _ in $(seq "${EXTRA_REPEAT:-4}"); do
            awk -v d="$extra/" -F'\t' '{print d $1 "\t" $2}' "$EXTRA/train.tsv"
        done >>"$MANIFEST.tmp"
    fi
    mv "$MANIFEST.tmp" "$MANIFEST"
    echo "$status" >"$SYNTH.rc"  # last: asr.train --wait-for reads the manifest once this exists
    ;;
train)
    mkdir -p "$(dirname "$RUN")"
    budget=$((${DEADLINE:-$(($(date +%s) + 300))} - $(date +%s) - 15))
    # Starts at once: the whisper frames of the clips are computed as make_data writes them (--prefetch), and
    # training starts when the data phase has written $SYNTH.rc (after the manifest).
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of extra options
    python3 -m asr.train --manifest "$MANIFEST" --prefetch "$SYNTH/train.tsv" --wait-for "$SYNTH.rc" --out "$RUN" \
        --model small --tokenizer "${TOKENIZER:-.data/tokenizer}" --canvas-length 160 --device "${DEVICE:-cuda}" --cache-dir memory \
        --batch-size "${BATCH:-$(default_batch)}" --lr "${LR:-2e-3}" --warmup 100 --pad-weight "${PAD_WEIGHT:-0.1}" \
        --save-every 500 --log-every 10 --time-budget "$budget" --quiet ${TRAIN_ARGS:-} 2>&1 | tee "$RUN.stdout"
    rc=${PIPESTATUS[0]}
    echo "make_data exit status $(cat "$SYNTH.rc" 2>/dev/null || echo '(not finished)'); manifest: $(wc -l <"$MANIFEST" 2>/dev/null) rows"
    tail -c 2000 "$SYNTH.log" | tr '\r' '\n' | tail -4
    if [ -d "$RUN/model" ]; then
        tar -C "$RUN/model" -cf "$OUT/small-backbone.tar" backbone
        cp "$RUN.stdout" "$RUN/model/train.stdout"
        cp "$RUN/log.jsonl" "$RUN/model/log.jsonl"
        if [ -f "$RUN/profile.txt" ]; then cp "$RUN/profile.txt" "$RUN/model/profile.txt"; fi
        tar -C "$RUN/model" -cf "$OUT/small-rest.tar" --exclude backbone .
    fi
    echo "asr.train exit status $rc"
    exit "$rc"
    ;;
run)  # all of it, training only: install, then data in the background and training at once
    T0=${T0:-$(date +%s)}
    if [ -z "${SKIP_INSTALL:-}" ]; then bash "$SELF" install || exit 1; fi
    rm -f "$SYNTH.rc" "$MANIFEST"  # a previous call's data on a warm machine is not this call's
    (bash "$SELF" data &)
    DEADLINE=${DEADLINE:-$((T0 + 570))} bash "$SELF" train
    ;;
*)
    echo "usage: $0 install|data|train|run" >&2
    exit 2
    ;;
esac
