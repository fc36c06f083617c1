"""Regenerate the example clips: `python examples/make_examples.py` (needs Debian's espeak-ng).

Each sentence is spoken by espeak-ng, resampled to 16 kHz mono and written in the format listed below.
The clips, their transcripts and this script are released under CC0 1.0 (see examples/README.md).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

HERE = Path(__file__).resolve().parent
RATE = 16_000

# file name, espeak-ng voice, words per minute, text
CLIPS = [
    ("quick_brown_fox.flac", "en-us", 150, "The quick brown fox jumps over the lazy dog."),
    ("diffusion_steps.wav", "en-gb", 155, "Diffusion models refine the whole sentence at once, one step at a time."),
    (
        "weather_report.ogg",
        "en-us+f3",
        150,
        "Tomorrow will be cloudy in the morning, with light rain in the afternoon.",
    ),
    ("meeting_time.flac", "en-gb-x-rp", 145, "The meeting starts at half past nine on Tuesday, in room twelve."),
]


def speak(text: str, voice: str, wpm: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
        samples, rate = sf.read(raw, dtype="float32")
    samples = soxr.resample(samples, rate, RATE, quality="HQ")
    pad = np.zeros(int(0.25 * RATE), dtype=np.float32)  # a short pause before and after the speech
    samples = np.concatenate([pad, samples, pad])
    return (0.9 * samples / max(1e-6, float(np.abs(samples).max()))).astype(np.float32)


def main() -> None:
    rows = ["file\ttext\tvoice\tseconds"]
    for name, voice, wpm, text in CLIPS:
        samples = speak(text, voice, wpm)
        path = HERE / name
        fmt = {"flac": "FLAC", "wav": "WAV", "ogg": "OGG"}[path.suffix[1:]]
        subtype = {"FLAC": "PCM_16", "WAV": "PCM_16", "OGG": "VORBIS"}[fmt]
        sf.write(path, samples, RATE, format=fmt, subtype=subtype)
        rows.append(f"{name}\t{text}\t{voice}\t{len(samples) / RATE:.2f}")
        print(f"{name}: {len(samples) / RATE:.2f} s, {path.stat().st_size // 1024} KB")
    (HERE / "manifest.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
