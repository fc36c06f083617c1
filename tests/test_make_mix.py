"""train/make_mix.py: a mix lists each part's clips, with their texts, as many times as asked, from another folder."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import soundfile as sf
from conftest import train_script

from asr.evaluate import read_manifest

mm = train_script("make_mix")


def _part(folder, texts, seconds=0.5):
    (folder / "clips").mkdir(parents=True)
    for i, _ in enumerate(texts):
        sf.write(folder / "clips" / f"{i}.flac", np.zeros(int(16000 * seconds), dtype=np.float32), 16000)
    (folder / "train.tsv").write_text("".join(f"clips/{i}.flac\t{t}\n" for i, t in enumerate(texts)))
    return folder / "train.tsv"


def test_mix_repeats_parts_and_keeps_paths_and_texts(tmp_path):
    a = _part(tmp_path / "a", ["one two", "three"])
    b = _part(tmp_path / "deep" / "b", ["four", "five six", "seven"], seconds=1.0)
    out = tmp_path / "mixes" / "mix.tsv"
    summary = mm.make_mix(out, [(a, 3, None), (b, 1, 2)])
    got = [(u.audio.resolve(), u.text) for u in read_manifest(out)]
    want_a = [(u.audio.resolve(), u.text) for u in read_manifest(a)]
    want_b = [(u.audio.resolve(), u.text) for u in read_manifest(b)][:2]
    assert got == want_a * 3 + want_b
    assert not any(line.startswith("/") for line in out.read_text().splitlines())  # relative: the folders can move
    assert [s["rows"] for s in summary] == [6, 2] and [s["clips"] for s in summary] == [2, 2]
    assert summary[1]["hours"] == pytest.approx(2.0 / 3600)


@pytest.mark.parametrize("spec", ["m.tsv:0", "m.tsv:x", "m.tsv:1:2:3"])
def test_bad_part_specs_are_refused(spec):
    with pytest.raises(argparse.ArgumentTypeError):
        mm.parse_part(spec)
