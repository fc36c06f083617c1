#!/usr/bin/env bash
# Fill the ignored .whl/ and .data/ folders that train/gpu_train.sh needs on the GPU machine, and check that they fit
# the device tool's 64 MiB (with the tracked tree).
#
#   bash train/prepare_gpu_data.sh [SYNTH_DIR] [INIT_MODEL_DIR]
#
# .data/jobs.jsonl.gz  the espeak job list (40 000 clips, up to 60 words; the held-out voices and sentences excluded)
# .data/tokenizer/     the small model's tokenizer (train/make_tokenizer.py --vocab 4096; deterministic)
# .data/extra/         SYNTH_DIR's training clips of the other engines (flite, festival, hibari) as opus 12 kbit/s,
#                      when SYNTH_DIR (a train/make_data.py output folder) is given; needs ffmpeg with libopus
# .data/init/          INIT_MODEL_DIR (an exported small model) to continue from: TRAIN_ARGS="--model .data/init"
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.data/" .gitignore || { echo "/.data/ is not in .gitignore" >&2; exit 2; }
ls .whl/transformers-5.23.0-*.whl .whl/espeakng_loader-*.whl >/dev/null 2>&1 || bash bench/fetch_wheels.sh
mkdir -p .data
[ -f .data/jobs.jsonl.gz ] || python3 train/make_data.py --plan-out .data/jobs.jsonl.gz --train 40000 --test 0 \
    --engines espeak --max-words 60 --seed 0
[ -f .data/tokenizer/tokenizer.json ] || python3 train/make_tokenizer.py --out .data/tokenizer --vocab 4096
if [ -n "${1:-}" ] && [ ! -f .data/extra/train.tsv ]; then
    mkdir -p .data/extra/clips
    python3 - "$1" <<'EOF' >.data/extra/list.tsv
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
for line in open(root / "train.meta.jsonl", encoding="utf-8"):
    row = json.loads(line)
    if row["engine"] != "espeak":
        print(f"{root / row['audio']}\tclips/{Path(row['audio']).stem}.opus\t{row['text']}")
EOF
    while IFS=$'\t' read -r src dst _; do
        ffmpeg -nostdin -hide_banner -loglevel error -y -i "$src" -c:a libopus -b:a 12k -application voip ".data/extra/$dst"
    done <.data/extra/list.tsv
    cut -f2,3 .data/extra/list.tsv >.data/extra/train.tsv
    rm .data/extra/list.tsv
fi
if [ -n "${2:-}" ]; then rm -rf .data/init && cp -r "$2" .data/init; fi
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -sb .whl .data | awk '{s += $1} END {print s}')
total=$((tracked + carried))
echo "tracked $((tracked / 1048576)) MiB + .whl/.data $((carried / 1048576)) MiB = $((total / 1048576)) MiB (limit 64)"
if [ "$total" -gt $((64 * 1048576)) ]; then
    echo "over the device tool's 64 MiB: leave out .data/extra or .data/init (with .data/init and no .data/extra:" \
        "also move .whl/peft-*.whl out of the tree for a training-only call; training the small model needs no peft)" >&2
    exit 1
fi
