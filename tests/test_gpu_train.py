"""train/gpu_train.sh, the GPU machine's one training call, run here on the CPU with four clips: the data phase
makes the clips and the manifest, training prefetches their whisper frames, trains and returns the two tar files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import soundfile as sf
from conftest import train_script

ROOT = Path(__file__).resolve().parents[1]
md = train_script("make_data")


@pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None, reason="espeakng-loader is not installed")
def test_gpu_train_run_on_the_cpu(tmp_path):
    """Also a natural-voice recipe's pieces: Pico jobs (where py-nanotts is installed), carried clips (EXTRA)
    listed EXTRA_REPEAT times in the manifest, and the aligned canvas after a CTC-only step (train/README.md §3b)."""
    voices = [md.Voice("espeak", "en-us+m1", 1.0, 50)]
    if importlib.util.find_spec("py_nanotts") is not None:
        voices.append(md.Voice("pico", "en-GB", 1.1))
    jobs = [md.Job(i, "train", f"short sentence {i}.", voices[i % len(voices)], 7, f"clips/train/{i:06d}.flac")
            for i in range(4)]  # fmt: skip
    md.write_jobs(tmp_path / "jobs.jsonl.gz", jobs, {"engines": ["espeak", "pico"], "sentences": 4, "seed": 7})
    extra = tmp_path / "extra"
    (extra / "clips").mkdir(parents=True)
    audio, rate = md.synthesize("a carried clip.", voices[-1], seed=0)
    sf.write(extra / "clips" / "0-000000.flac", audio, rate)
    (extra / "train.tsv").write_text("clips/0-000000.flac\ta carried clip.\n")
    env = dict(
        os.environ, SKIP_INSTALL="1", DEVICE="cpu", TOKENIZER="byte", BATCH="2", EXTRA=str(extra), EXTRA_REPEAT="2",
        JOBS=str(tmp_path / "jobs.jsonl.gz"), SYNTH=str(tmp_path / "synth"), RUN=str(tmp_path / "run"),
        OUT=str(tmp_path / "out"), MANIFEST=str(tmp_path / "train.tsv"), MAKE_DATA_ESPEAK="library",
        DEADLINE=str(int(time.time()) + 240), TRAIN_ARGS="--steps 3 --threads 1 --canvas aligned --ctc-steps 1",
    )  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(["bash", "train/gpu_train.sh", "run"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "prefetch: whisper frames of" in log and "make_data exit status 0; manifest: 6 rows" in log
    assert "step 3:" in log and "asr.train exit status 0" in log
    with tarfile.open(tmp_path / "out" / "small-backbone.tar") as tar:
        assert {"backbone/config.json", "backbone/model.safetensors"} <= set(tar.getnames())
    with tarfile.open(tmp_path / "out" / "small-rest.tar") as tar:
        assert {"./speech.json", "./projector.safetensors", "./log.jsonl"} <= set(tar.getnames())
        info = json.load(tar.extractfile("./speech.json"))
    assert info["canvas"] == "aligned" and info["train"]["ctc_steps"] == 1  # the recipe's TRAIN_ARGS, as on the GPU
