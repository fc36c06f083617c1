#!/usr/bin/env bash
# The GPU benchmark in one `device` tool call: install the carried wheels, check correctness, time the real-size
# stack (DiffusionGemma-26B-A4B + whisper-small shapes, random bf16 weights) and print the table last.
#
#   on this machine, once:  bash bench/fetch_wheels.sh          (fills .whl/, which git ignores)
#   device tool:            command "bash bench/gpu_run.sh", carry [".whl"], timeout_s 570
#   afterwards, here:       python -m asr.bench --merge <files_at>/results.json   (then commit bench/)
#
# Writes $OUT/results.json (after every case, so a run cut short keeps what it measured), $OUT/RESULTS.md,
# $OUT/bench.log, $OUT/gpu.txt and $OUT/decoder-step-profile.txt (the CUDA kernels of 3 eager decoder steps). BENCH_BUDGET_S (default 450) bounds the run: the static-cache compile baseline
# (~190 s of compile on an H100) is skipped when it would end past the budget. BENCH_ARGS adds options.
# BENCH_COMMIT (the commit here: the GPU machine's copy of .git can be stale) and BENCH_CONDITIONS (e.g. other work
# running beside the benchmark) are written into every record.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

bash bench/install_wheels.sh || { echo "installing the carried wheels failed" >&2; exit 2; }
export PYTHONPATH=/tmp/site

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 - <<'EOF' || exit 3
import importlib.metadata as md, peft, torch, transformers
try:
    triton = md.version("triton")
except md.PackageNotFoundError:
    triton = "missing (the fused-moe cases will fail)"
print(f"python3 torch {torch.__version__} (cuda {torch.version.cuda}), transformers {transformers.__version__}, "
      f"peft {peft.__version__}, triton {triton}, {torch.cuda.get_device_name()}")
assert transformers.__version__ == "5.23.0", "the carried transformers wheel is not the one imported"
assert torch.cuda.is_available()
EOF

# shellcheck disable=SC2086  # BENCH_ARGS is a list of extra options, e.g. "--cases baseline-generate-static-8steps"
python3 -m asr.bench --size real --device cuda --out "$OUT" --check --budget-s "${BENCH_BUDGET_S:-450}" \
    --lora-rank 16 ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
rc=${PIPESTATUS[0]}
echo "asr.bench exit status $rc; records in $OUT/results.json"
exit "$rc"
