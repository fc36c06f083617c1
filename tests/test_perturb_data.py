"""train/perturb_data.py: variants of existing clips change speed and pitch together, keep the text, and repeat."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from conftest import train_script

pd = train_script("perturb_data")
RATE = 16_000


def _peak_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / RATE)[np.argmax(spectrum)])


def test_variants_shift_pitch_and_tempo_by_their_factor_and_are_reproducible(tmp_path):
    t = np.arange(int(2.0 * RATE)) / RATE
    clip = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    sf.write(tmp_path / "a.wav", clip, RATE)
    sf.write(tmp_path / "b.wav", clip[:RATE], RATE)
    (tmp_path / "m.tsv").write_text("a.wav\tfirst text\nb.wav\tsecond text\n", encoding="utf-8")
    out = tmp_path / "out"
    assert pd.main([str(tmp_path / "m.tsv"), "--out", str(out), "--copies", "2", "--seed", "3"]) == 0

    rows = [json.loads(line) for line in (out / "train.meta.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["first text"] * 2 + ["second text"] * 2
    assert (out / "train.tsv").read_text().splitlines()[0] == f"{rows[0]['audio']}\tfirst text"
    factors = [r["resample"] for r in rows]
    assert all(0.85 <= f <= 0.95 or 1.05 <= f <= 1.15 for f in factors) and len(set(factors)) == 4
    for row, source_len in zip(rows, [2 * RATE, 2 * RATE, RATE, RATE], strict=True):
        audio, rate = sf.read(out / row["audio"], dtype="float32")
        assert rate == RATE
        assert abs(len(audio) - source_len / row["resample"]) <= 2  # tempo: the clip is 1/factor as long
        assert abs(_peak_hz(audio) - 440.0 * row["resample"]) < 3.0  # pitch: the tone moves by the factor
        assert abs(20 * np.log10(np.max(np.abs(audio))) - row["peak_db"]) < 0.1

    first = (out / rows[0]["audio"]).read_bytes()
    (out / rows[0]["audio"]).unlink()
    assert pd.main([str(tmp_path / "m.tsv"), "--out", str(out), "--copies", "2", "--seed", "3"]) == 0
    assert (out / rows[0]["audio"]).read_bytes() == first  # the same variant again from (seed, index, copy)
    again = [json.loads(line) for line in (out / "train.meta.jsonl").read_text().splitlines()]
    assert again == rows  # variants that existed are described as when they were made


def test_colouring_stays_within_its_bound():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(RATE * 4)
    for seed in range(5):
        settings = pd.draw(seed, 0, 0)
        coloured = pd.colour(noise, settings["colour"], settings["phases"])
        gain = np.abs(np.fft.rfft(coloured)) / (np.abs(np.fft.rfft(noise)) + 1e-12)
        gain_db = 20 * np.log10(gain[100:])
        assert np.max(np.abs(gain_db)) <= pd.MAX_GAIN_DB + 1e-6
        assert np.std(gain_db) > 0.5  # it does colour
