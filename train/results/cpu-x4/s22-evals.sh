#!/usr/bin/env bash
# Session 22's evaluations (train/results/cpu-x4 section 17), from the work folder, one at a time, nothing else
# running. Every model reads whisper's position table as computed on load (asr/mini/whisper-tiny-en without it).
set -euo pipefail
export PYTHONPATH=/work/main
cd /root/asr-work
ev() { python -m asr.evaluate --manifest "$1" --model "$2" --steps ${4:-1,4,8,16} --ctc --quiet --threads 2 > "$3" 2>&1; tail -1 "$3"; }
# 1. mini as shipped (its weights unchanged), with the computed position table
ev real-speech/manifest.tsv mini s22/mini-real.txt
ev kokoro-test/test.tsv mini s22/mini-kokoro.txt
# 2. run U with mini's lexicon and reading
rm -rf s22/U && cp -r s22/jointU/model s22/U && cp /work/main/asr/mini/model/lexicon.tsv.gz s22/U/ && python - <<'PY'
import json
a = json.load(open("/work/main/asr/mini/model/speech.json")); p = "s22/U/speech.json"; b = json.load(open(p))
b["lexicon"], b["ctc_weight"] = a["lexicon"], a["ctc_weight"]
json.dump(b, open(p, "w"), indent=1)
PY
ev real-speech/manifest.tsv s22/U s22/U-real.txt
ev kokoro-test/test.tsv s22/U s22/U-kokoro.txt
# 3. the 200 Piper clips held out of run U (the voice was trained on; sentences and clips were not)
ev s22-piper/dev.tsv mini s22/mini-piperdev.txt 8
ev s22-piper/dev.tsv s22/U s22/U-piperdev.txt 8
# 4. the shipped mini (run U) read position by position
python -m asr.evaluate --manifest real-speech/manifest.tsv --model mini --steps 1,4,8,16 --quiet --threads 2 --no-lexicon > s22/nolexicon-real.txt 2>&1
python -m asr.evaluate --manifest kokoro-test/test.tsv --model mini --steps 1,4,8,16 --quiet --threads 2 --no-lexicon > s22/nolexicon-kokoro.txt 2>&1
# 5. the shipped mini again, default reading, for its speed (nothing else running)
python -m asr.evaluate --manifest real-speech/manifest.tsv --model mini --steps 1,4,8,16 --ctc --quiet --threads 2 > s22/mini-U-speed-real.txt 2>&1
