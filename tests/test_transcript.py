"""Transcript formats, the pipeline's public surface and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile as sf
from conftest import SR, same_threads_env, speechlike, with_pauses

import asr
from asr.transcript import Segment, Timings, Transcript


def _transcript() -> Transcript:
    segs = [Segment(0.0, 2.5, " hello there"), Segment(2.5, 3661.042, "général Kenobi "), Segment(4000, 4001, "  ")]
    return Transcript(
        segments=segs, timings=Timings(audio_seconds=4001.0, wall_seconds=2.0), model="m", steps=8, seed=3
    )


def test_srt_and_vtt():
    t = _transcript()
    assert t.to_srt() == (
        "1\n00:00:00,000 --> 00:00:02,500\nhello there\n\n2\n00:00:02,500 --> 01:01:01,042\ngénéral Kenobi\n\n"
    )
    assert t.to_vtt() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nhello there\n\n00:00:02.500 --> 01:01:01.042\ngénéral Kenobi\n\n"
    )
    assert t.text == "hello there général Kenobi"
    assert t.to_txt() == "hello there général Kenobi\n"
    assert t.timings.rtfx == 2000.5


def test_dict_is_json_safe(tiny):
    t = tiny.transcribe(speechlike(2.0), steps=3, seed=5)
    data = json.loads(json.dumps(t.to_dict()))
    assert data["steps"] == 3 and data["seed"] == 5 and data["no_speech"] is False
    seg = data["segments"][0]
    assert len(seg["steps"]) == 3
    first = seg["steps"][0]
    assert set(first) == {"index", "temperature", "canvas", "sampled", "argmax", "accepted", "confidence", "entropy"}
    assert len(first["canvas"]) == tiny.model.canvas_length
    assert "steps" not in json.loads(t.to_json(steps=False))["segments"][0]
    assert t.segments[0].words == [] and "words" not in seg  # a packed canvas has no word timings
    assert set(data["timings"]["stages"]) >= {"decode_audio", "features", "encoder+projector", "prefill", "denoise"}


def test_pipeline_seed_and_inputs(tiny, tmp_path):
    x = speechlike(3.0)
    path = tmp_path / "x.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    by_array = tiny.transcribe(x, steps=4, seed=9)
    by_path = tiny.transcribe(path, steps=4, seed=9)
    by_bytes = tiny.transcribe(path.read_bytes(), steps=4, seed=9)
    by_pair = tiny.transcribe((SR, x), steps=4, seed=9)
    assert by_array.text == by_path.text == by_bytes.text == by_pair.text
    assert by_array.segments[0].tokens == by_path.segments[0].tokens
    other = tiny.transcribe(x, steps=4, seed=10)
    assert not np.array_equal(other.segments[0].steps.canvas, by_array.segments[0].steps.canvas)
    unseeded = tiny.transcribe(x, steps=2)
    assert isinstance(unseeded.seed, int)  # the drawn seed is recorded, so the run can be repeated
    assert tiny.transcribe(x, steps=2, seed=unseeded.seed).text == unseeded.text


def test_long_audio_is_one_batch_with_times(tiny):
    audio = with_pauses([("speech", 20), ("pause", 1), ("speech", 20), ("pause", 1), ("speech", 5)])
    calls = []
    t = tiny.transcribe(audio, steps=2, seed=0, progress=lambda f, m: calls.append((f, m)))
    assert [round(s.start, 1) for s in t.segments] == [0.0, 20.5]
    assert t.segments[-1].end == len(audio) / SR
    assert all(len(s.steps) == 2 for s in t.segments)
    assert calls[0] == (0.0, "segments 1-2 of 2") and calls[-1] == (1.0, "done")  # both denoised in one batch
    small = tiny.transcribe(audio, steps=2, seed=0, batch_size=1)
    assert len(small.segments) == 2


def test_cli_json_and_errors(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, speechlike(2.0), SR)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    run = subprocess.run(
        [sys.executable, "-m", "asr", str(bad), str(good), "--model", "tiny-random", "--format", "json", "--steps", "3",
         "--seed", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env=same_threads_env(),
    )  # fmt: skip
    assert run.returncode == 1  # one file failed, the other was still transcribed
    assert "bad.wav" in run.stderr and "could not be decoded" in run.stderr
    data = json.loads(run.stdout)
    assert data["steps"] == 3 and len(data["segments"][0]["steps"]) == 3
    expected = asr.load("tiny-random", device="cpu").transcribe(good, steps=3, seed=1)
    assert data["text"] == expected.text

    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "asr", str(good), "--model", "tiny-random", "--format", "srt", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (out / "good.srt").read_text().startswith("1\n00:00:00,000 --> ")


def test_cli_model_error(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "asr", "x.wav", "--model", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 2 and "holds no diffusion_asr_small.pt" in run.stderr
