"""Audio in: decode anything to 16 kHz mono float32, refuse what is not audio, split long audio at pauses.

Every problem with the input raises :class:`AudioError` with a sentence a person can act on.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30.0  # the whisper encoder's window: one segment is at most this long
MAX_FILE_BYTES = 200 * 1024 * 1024  # uploads larger than this are refused before decoding
MAX_AUDIO_SECONDS = 4 * 3600.0

AudioInput = str | os.PathLike | bytes | tuple | np.ndarray


class AudioError(ValueError):
    """The input is not usable audio (empty, unreadable, not audio, NaN/inf samples, too long...)."""


def load_audio(audio: AudioInput, sample_rate: int | None = None, max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray:
    """Decode ``audio`` to a mono float32 array at 16 kHz.

    ``audio`` may be a file path, the raw bytes of a file, a ``(sample_rate, array)`` pair as Gradio gives it
    (int16/int32/uint8/float, mono ``(n,)`` or ``(n, channels)``), or an array (16 kHz unless ``sample_rate``).
    """
    if isinstance(audio, tuple):
        if len(audio) != 2:
            raise AudioError("expected a (sample_rate, samples) pair")
        sample_rate, audio = audio
        if not isinstance(audio, np.ndarray) and isinstance(sample_rate, np.ndarray):  # (samples, rate) order
            sample_rate, audio = audio, sample_rate
        samples, rate = np.asarray(audio), int(sample_rate)
    elif isinstance(audio, np.ndarray):
        samples, rate = audio, int(sample_rate or SAMPLE_RATE)
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        samples, rate = _decode_bytes(bytes(audio))
    elif isinstance(audio, (str, os.PathLike)):
        samples, rate = _decode_file(Path(audio))
    else:
        raise AudioError(f"cannot read audio from a {type(audio).__name__}")
    return _to_mono_16k(samples, rate, max_seconds)


def _decode_file(path: Path) -> tuple[np.ndarray, int]:
    if not path.exists():
        raise AudioError(f"no such file: {path}")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path.name} is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise AudioError(f"{path.name} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return data, rate
    except Exception as first:  # noqa: BLE001 - fall back to librosa/audioread for what libsndfile can't read
        return _decode_with_librosa(path, first)


def _decode_bytes(data: bytes) -> tuple[np.ndarray, int]:
    if not data:
        raise AudioError("the audio is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise AudioError(f"the audio is {len(data) / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
    import soundfile as sf

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return samples, rate
    except Exception as first:  # noqa: BLE001
        with tempfile.TemporaryDirectory(prefix="asr-") as tmp:
            path = Path(tmp) / "upload"
            path.write_bytes(data)
            return _decode_with_librosa(path, first)


def _decode_with_librosa(path: Path, first: Exception) -> tuple[np.ndarray, int]:
    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            samples, rate = librosa.load(str(path), sr=None, mono=False)
    except Exception as exc:  # noqa: BLE001
        reason = str(first).splitlines()[0] if str(first) else type(first).__name__
        reason = reason.replace(str(path), path.name)  # never show server paths
        raise AudioError(
            f"{path.name} could not be decoded as audio ({reason}). "
            "Supported: wav, flac, ogg/opus, mp3 and what ffmpeg reads; the file may be truncated or not audio."
        ) from exc
    return np.atleast_2d(samples).T, int(rate)


def _to_mono_16k(samples: np.ndarray, rate: int, max_seconds: float) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.dtype.kind not in "iuf":
        raise AudioError(f"audio samples must be numbers, got dtype {samples.dtype}")
    if not 1000 <= rate <= 384_000:
        raise AudioError(f"unsupported sample rate {rate} Hz (expected 1 kHz to 384 kHz)")
    if samples.size == 0:
        raise AudioError("the audio contains no samples")
    if samples.ndim == 2:  # (n, channels) as soundfile and Gradio give it, or (channels, n)
        channel_axis = 1 if samples.shape[1] <= samples.shape[0] else 0
        samples = _scale_to_float(samples).mean(axis=channel_axis)
    elif samples.ndim == 1:
        samples = _scale_to_float(samples)
    else:
        raise AudioError(f"audio must be 1-D or 2-D (samples x channels), got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise AudioError("the audio contains NaN or infinite samples")
    if samples.size / rate > max_seconds:
        raise AudioError(f"the audio is {samples.size / rate:.0f} s long; the limit is {max_seconds:.0f} s")
    if rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _scale_to_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    info = np.iinfo(samples.dtype)
    if samples.dtype.kind == "u":
        mid = (info.max + 1) / 2
        return ((samples.astype(np.float64) - mid) / mid).astype(np.float32)
    return (samples.astype(np.float64) / (info.max + 1)).astype(np.float32)


# --- segmentation ------------------------------------------------------------------------------------------------

FRAME = 0.02  # seconds per energy frame
SILENCE_FLOOR_DB = -55.0  # frames quieter than this (dBFS) are never speech
RELATIVE_DB = 35.0  # ... nor frames this far below the loudest part of the file
MIN_PAUSE = 0.3  # a pause must last this long to be a cut point
MIN_SPEECH = 0.15  # less voiced time than this in a whole file counts as no speech
PAD = 0.2  # seconds of context kept around speech at segment edges


@dataclass(frozen=True)
class Span:
    """A piece of the audio, in seconds."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def voiced_frames(audio: np.ndarray) -> np.ndarray:
    """Energy voice-activity decision per 20 ms frame (True = voiced)."""
    hop = int(FRAME * SAMPLE_RATE)
    n = len(audio) // hop
    if n == 0:
        return np.zeros(0, dtype=bool)
    frames = audio[: n * hop].reshape(n, hop).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    threshold = max(SILENCE_FLOOR_DB, db.max() - RELATIVE_DB)
    return db > threshold


def split_on_silence(audio: np.ndarray, max_seconds: float = WINDOW_SECONDS) -> list[Span]:
    """Split 16 kHz audio into spans of at most ``max_seconds``, cutting in the middle of pauses.

    Leading and trailing silence is trimmed (keeping ``PAD`` seconds). A span is cut inside the longest pause
    that leaves the span as long as possible; only where no pause exists is it cut hard at ``max_seconds``.
    Returns ``[]`` when there is no speech at all.
    """
    voiced = voiced_frames(audio)
    if voiced.sum() * FRAME < MIN_SPEECH:
        return []
    total = len(audio) / SAMPLE_RATE
    idx = np.flatnonzero(voiced)
    first, last = max(0.0, idx[0] * FRAME - PAD), min(total, (idx[-1] + 1) * FRAME + PAD)
    pauses = _pauses(voiced)  # (start_s, end_s) of each silent run of at least MIN_PAUSE
    spans: list[Span] = []
    start = first
    while last - start > max_seconds:
        limit = start + max_seconds
        # candidate cuts: pause midpoints that fall inside the window, preferring later ones for longer spans
        candidates = [(a + b) / 2 for a, b in pauses if start + 1.0 < (a + b) / 2 <= limit]
        if candidates:
            # among the pauses in the last third of the window take the longest; else the latest pause
            late = [(b - a, (a + b) / 2) for a, b in pauses if limit - max_seconds / 3 < (a + b) / 2 <= limit]
            cut = max(late)[1] if late else max(candidates)
        else:
            cut = limit
        spans.append(Span(start, cut))
        start = cut
    spans.append(Span(start, last))
    return [s for s in spans if s.duration > 0]


def _pauses(voiced: np.ndarray) -> list[tuple[float, float]]:
    padded = np.concatenate([[True], voiced, [True]]).astype(np.int8)
    edges = np.diff(padded)
    starts, ends = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)
    return [(a * FRAME, b * FRAME) for a, b in zip(starts, ends, strict=True) if (b - a) * FRAME >= MIN_PAUSE]


def cut(audio: np.ndarray, span: Span) -> np.ndarray:
    """The samples of ``span``."""
    return audio[int(round(span.start * SAMPLE_RATE)) : int(round(span.end * SAMPLE_RATE))]
