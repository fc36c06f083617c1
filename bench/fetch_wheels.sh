#!/usr/bin/env bash
# Download (here, not on the GPU machine) the wheels bench/gpu_run.sh installs there, into .whl/ (git-ignored).
# The GPU image has torch 2.11, tokenizers 0.23.2, safetensors 0.8.0, huggingface_hub 1.33, accelerate, typer,
# pyyaml, numpy (KINDS.md); it lacks transformers 5.23 (it has 5.17), cffi and soundfile/soxr, and its regex may be
# older than transformers 5.23 requires (>= 2025.10.22). peft is listed there, version unknown: carried pinned.
# espeakng-loader (libespeak-ng + its data, 10 MB), for train/gpu_train.sh's speech synthesis, is left out: with the
# tracked tree (~40 MB) it would take a call over its 64 MiB; train/prepare_gpu_data.sh fetches it itself.
#   bash bench/fetch_wheels.sh [NAME==VERSION ...]   (default: the list below; train/prepare_gpu_data.sh adds others)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
wheels=("$@")
if [ "${#wheels[@]}" -eq 0 ]; then
    wheels=(transformers==5.23.0 peft==0.21.2 regex==2026.11.19 soundfile==0.14.0 soxr==1.1.0 cffi==2.1.1
            pycparser==3.12)
fi
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    "${wheels[@]}"
ls -la .whl
du -sh .whl
