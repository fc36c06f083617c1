"""train/fetch_real_speech.py without the network: members read from an archive by name, raw PCM to WAV, every
clip checked against its listed SHA-256, the manifest in the order of the list; and the committed list itself."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import train_script

frs = train_script("fetch_real_speech")


def _sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"pkg-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _wav(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


def test_write_set_from_an_archive(tmp_path):
    pcm = (np.sin(np.arange(1600) / 5) * 8000).astype("<i2")
    wav = _wav(np.zeros(800, dtype=np.int16))
    archive = _sdist(tmp_path / "pkg-1.0.tar.gz", {"data/a.raw": pcm.tobytes(), "data/b.wav": wav, "x.txt": b"x"})
    raw_as_wav = frs.clip_bytes("data/a.raw", pcm.tobytes())
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    clips = [
        frs.Clip("pkg==1.0", "data/b.wav", "pkg/b.wav", "bee", sha(wav)),
        frs.Clip("pkg==1.0", "data/a.raw", "pkg/a.wav", "a sine", sha(raw_as_wav)),
        frs.Clip("deb:other", "usr/c.wav", "other/c.wav", "not fetched", "0" * 64),
    ]
    out = tmp_path / "out"
    written = frs.write_set(clips, {"pkg==1.0": archive}, out)
    assert written == clips[:2]
    assert (out / "manifest.tsv").read_text() == "pkg/b.wav\tbee\npkg/a.wav\ta sine\n"
    audio, rate = sf.read(out / "pkg/a.wav", dtype="int16")
    assert rate == 16000 and np.array_equal(audio, pcm)  # the raw PCM, sample for sample
    assert (out / "pkg/b.wav").read_bytes() == wav
    assert "| pkg==1.0 | 2 |" in (out / "SOURCES.md").read_text()

    bad = [frs.Clip("pkg==1.0", "data/b.wav", "pkg/b.wav", "bee", "0" * 64)]
    with pytest.raises(RuntimeError, match="SHA-256 differs"):
        frs.write_set(bad, {"pkg==1.0": archive}, tmp_path / "bad")
    missing = [frs.Clip("pkg==1.0", "data/none.wav", "pkg/none.wav", "?", "0" * 64)]
    with pytest.raises(RuntimeError, match="lacks"):
        frs.write_set(missing, {"pkg==1.0": archive}, tmp_path / "missing")


def test_the_committed_list():
    clips = frs.read_list()
    assert len(clips) == 75 and len({c.clip for c in clips}) == 75
    sources = {frs.package_name(c.source) for c in clips}
    assert sources <= set(frs.LICENCES)  # every source has its licence stated
    assert all(c.text.strip() and len(c.sha256) == 64 for c in clips)
    assert all(c.source.startswith("deb:") or "==" in c.source for c in clips)  # PyPI versions are pinned
