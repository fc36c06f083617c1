"""Audio in: formats, rates, channels, features, segmentation at pauses, and the documented error on bad input."""

from __future__ import annotations

import io

import librosa
import numpy as np
import pytest
import soundfile as sf
from conftest import SR, speechlike, with_pauses
from transformers import WhisperFeatureExtractor

from asr.audio import MAX_FILE_BYTES, AudioError, Span, load_audio, split_on_silence


@pytest.mark.parametrize(
    "fmt,subtype,ext",
    [
        ("WAV", "PCM_16", "wav"),
        ("FLAC", None, "flac"),
        ("OGG", "VORBIS", "ogg"),
        ("OGG", "OPUS", "opus"),
        ("MP3", None, "mp3"),
    ],
)
def test_formats_decode_to_16k_mono(tmp_path, fmt, subtype, ext):
    rate = 48_000 if subtype == "OPUS" else 44_100
    x = speechlike(1.5, sr=rate)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, np.stack([x, x], axis=1), rate, format=fmt, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 1.5 * SR) < 0.05 * SR  # codecs may add a little padding
    from_bytes = load_audio(path.read_bytes())
    assert np.array_equal(y, from_bytes)


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 44_100, 96_000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_rates_and_channels_match_librosa(tmp_path, rate, channels):
    x = np.stack([speechlike(1.0, seed=c, sr=rate) for c in range(channels)], axis=1)
    path = tmp_path / "a.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    ours = load_audio(path)
    reference, _ = librosa.load(path, sr=SR, mono=True, res_type="soxr_hq")
    assert ours.shape == reference.shape
    assert np.allclose(ours, reference, atol=1e-5)


def test_gradio_pairs_int_and_float():
    x = speechlike(1.0, sr=48_000)
    as_int16 = (x * 32767).astype(np.int16)
    from_int = load_audio((48_000, np.stack([as_int16, as_int16], axis=1)))  # microphone: 48 kHz int16 stereo
    from_float = load_audio((48_000, x))
    assert np.allclose(from_int, from_float, atol=1e-3)
    u8 = np.clip(x * 127 + 128, 0, 255).astype(np.uint8)
    assert np.allclose(load_audio((48_000, u8)), from_float, atol=2e-2)
    assert np.allclose(load_audio((48_000, (x * 2**31 * 0.99).astype(np.int32))), from_float * 0.99, atol=1e-4)


def test_features_equal_whisper_feature_extractor(tiny, tmp_path):
    x = speechlike(7.0, sr=44_100)
    path = tmp_path / "b.wav"
    sf.write(path, np.stack([x, 0.5 * x], axis=1), 44_100, subtype="PCM_16")
    ours = tiny.features([load_audio(path)])
    wave, _ = librosa.load(path, sr=SR, mono=True)  # independent decode + resample
    reference = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=SR, return_tensors="np").input_features
    assert ours.shape == (1, 80, 3000)
    assert np.allclose(ours.numpy(), reference, atol=1e-4)


def test_segments_cut_inside_pauses():
    # 12 s speech, 0.8 s pause, 14 s speech, 1 s pause, 10 s speech, 0.6 s pause, 20 s speech -> 58.4 s
    pattern = [("speech", 12), ("pause", 0.8), ("speech", 14), ("pause", 1.0), ("speech", 10), ("pause", 0.6),
               ("speech", 20)]  # fmt: skip
    audio = with_pauses(pattern)
    spans = split_on_silence(audio)
    pauses = [(12.0, 12.8), (26.8, 27.8), (37.8, 38.4)]
    assert all(s.duration <= 30.0 for s in spans)
    cuts = [s.end for s in spans[:-1]]
    for c in cuts:  # every cut lies inside a real pause
        assert any(a <= c <= b for a, b in pauses), (c, spans)
    assert spans[0].start == pytest.approx(0.0, abs=0.05)
    assert spans[-1].end == pytest.approx(len(audio) / SR, abs=0.05)
    assert all(a.end == b.start for a, b in zip(spans, spans[1:], strict=False))  # nothing lost between segments
    # the greedy rule fills windows: 0-27.3 (cut in the 1 s pause), then 27.3-58.4 would be 31 s, so one more cut
    assert cuts[0] == pytest.approx(27.3, abs=0.1)
    assert len(spans) == 3


def test_no_pause_means_hard_cut_at_30s():
    spans = split_on_silence(speechlike(70.0))
    assert [round(s.duration, 2) for s in spans] == [30.0, 30.0, 10.0]


def test_silence_and_leading_trailing_trim():
    assert split_on_silence(np.zeros(SR * 5, dtype=np.float32)) == []
    assert split_on_silence((1e-4 * np.random.default_rng(0).standard_normal(SR * 5)).astype(np.float32)) == []
    spans = split_on_silence(with_pauses([("pause", 3), ("speech", 2), ("pause", 4)]))
    assert spans == [Span(pytest.approx(2.8, abs=0.05), pytest.approx(5.2, abs=0.05))]


def test_silence_gives_empty_no_speech_transcript(tiny):
    t = tiny.transcribe(np.zeros(SR * 4, dtype=np.float32), steps=4, seed=0)
    assert t.no_speech and t.text == "" and t.segments == []
    assert t.timings.audio_seconds == 4.0
    assert t.to_srt() == "" and t.to_vtt() == "WEBVTT\n\n"


# --- bad input: one exception type, a message a person understands ---------------------------------------------


def _wav_bytes(x=None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, speechlike(1.0) if x is None else x, SR, format="WAV")
    return buf.getvalue()


BAD = {
    "empty file": (lambda p: p.write_bytes(b""), "empty"),
    "text file": (lambda p: p.write_text("hello, I am not audio\n" * 20), "could not be decoded"),
    "truncated header": (lambda p: p.write_bytes(_wav_bytes()[:30]), "could not be decoded"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "could not be decoded"),
    "header only": (lambda p: p.write_bytes(_wav_bytes(np.zeros(0, dtype=np.float32))), "no samples"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files(tmp_path, case):
    make, message = BAD[case]
    path = tmp_path / "upload.wav"
    make(path)
    with pytest.raises(AudioError, match=message):
        load_audio(path)
    with pytest.raises(AudioError, match=message):
        load_audio(path.read_bytes())


@pytest.mark.parametrize(
    "audio,message",
    [
        (np.zeros(0, dtype=np.float32), "no samples"),
        (np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), "NaN or infinite"),
        (np.array([0.1, np.inf] * 100, dtype=np.float32), "NaN or infinite"),
        (np.zeros((2, 2, 2), dtype=np.float32), "1-D or 2-D"),
        (np.array(["a", "b"]), "must be numbers"),
        ((16_000, np.zeros((0, 2), dtype=np.int16)), "no samples"),
        ((100, np.zeros(1000, dtype=np.int16)), "sample rate"),
        ((16_000,), "pair"),
        (12345, "cannot read audio"),
        (b"", "empty"),
    ],
)
def test_bad_values(audio, message):
    with pytest.raises(AudioError, match=message):
        load_audio(audio)


def test_missing_folder_and_limits(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="folder"):
        load_audio(tmp_path)
    with pytest.raises(AudioError, match="limit is 10 s"):
        load_audio(speechlike(11.0), max_seconds=10)
    big = tmp_path / "big.wav"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(AudioError, match="limit is"):
        load_audio(big)


def test_pipeline_survives_bad_input(tiny):
    """A bad request raises AudioError and the pipeline keeps serving."""
    with pytest.raises(AudioError):
        tiny.transcribe(b"garbage bytes", steps=2)
    assert tiny.transcribe(speechlike(1.0), steps=2, seed=0).segments
