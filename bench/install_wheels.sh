#!/usr/bin/env bash
# On the GPU machine: install the carried wheels (.whl/, filled here by bench/fetch_wheels.sh) into /tmp/site, once.
# bench/gpu_run.sh and train/gpu_train.sh both call it; a second call finds the marker and does nothing, so nothing
# is reinstalled under a process that is importing from /tmp/site (the data synthesis beside the benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f /tmp/site/.carried-wheels ] && exit 0
if ! ls .whl/transformers-5.23.0-*.whl >/dev/null 2>&1; then
    echo "no .whl/transformers-5.23.0-*.whl: run bench/fetch_wheels.sh here and pass carry [\".whl\"]" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
touch /tmp/site/.carried-wheels
