"""More voices from clips that exist: speed/pitch perturbation and a random microphone colouring.

    python train/perturb_data.py MANIFEST --out DIR [--copies 1] [--seed 0] [--workers 1]

For each clip of MANIFEST (TSV or JSONL, as ``asr.evaluate`` reads it), writes ``--copies`` variants to
``DIR/clips/<n>-<k>.flac`` and lists them with the clip's text in ``DIR/train.tsv`` (paths relative to DIR), with
what was done to each in ``DIR/train.meta.jsonl``. Each variant:

- resamples the clip by a factor drawn from 0.85-0.95 or 1.05-1.15, which changes tempo and pitch together, so the
  vocal tract sounds longer or shorter (Kaldi's speed perturbation; ``make_data.py`` draws 0.88-1.12 once per clip,
  so a variant is at least ~5 % away from wherever its clip was);
- colours the spectrum with a smooth random gain curve over log-frequency (up to about +-8 dB; microphones, rooms
  and codecs colour real recordings this way);
- sets a random peak level (-25..-1 dBFS).

No noise is added: the clips of ``make_data.py`` carry theirs already. A second copy of a clip listed twice in a
training mix can be its variant instead, which costs ~50 ms per clip on one core against seconds of Kokoro synthesis.
Re-running skips variants that exist; a variant depends only on (``--seed``, clip index, copy), so the files are
the same on every machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "train"):  # run as a script only train/ is on the path
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from make_data import set_peak, write_flac  # noqa: E402

from asr.audio import SAMPLE_RATE  # noqa: E402
from asr.evaluate import read_manifest  # noqa: E402

MAX_GAIN_DB = 8.0


def draw(seed: int, index: int, copy: int) -> dict:
    """The settings of variant ``copy`` of clip ``index``: a function of the three numbers alone, so a variant that
    exists is described again without reading it."""
    rng = np.random.default_rng([seed, index, copy])
    offset = float(rng.uniform(0.05, 0.15))  # the speed factor: uniform on 0.85-0.95 or 1.05-1.15
    factor = 1.0 + offset if rng.random() < 0.5 else 1.0 - offset
    amps = rng.uniform(-1.0, 1.0, 3) / np.array([1.0, 2.0, 3.0])
    phases = rng.uniform(0, 2 * np.pi, 3)
    peak_db = float(rng.uniform(-25, -1))
    return {"resample": factor, "colour": amps.tolist(), "phases": phases.tolist(), "peak_db": peak_db}


def colour(audio: np.ndarray, amps: list[float], phases: list[float]) -> np.ndarray:
    """Multiply the spectrum by a smooth gain over log-frequency: cosines of these amplitudes and phases, scaled to
    at most ``MAX_GAIN_DB``."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    x = np.log2(np.maximum(freqs, 50.0) / 50.0) / np.log2(SAMPLE_RATE / 2 / 50.0)  # 0 at 50 Hz .. 1 at Nyquist
    curve = sum(a * np.cos(np.pi * (k + 1) * x + p) for k, (a, p) in enumerate(zip(amps, phases, strict=True)))
    gain_db = MAX_GAIN_DB * curve / max(1.0, float(np.max(np.abs(curve))))
    return np.fft.irfft(spectrum * 10 ** (gain_db / 20), len(audio))


def perturb(audio: np.ndarray, settings: dict) -> np.ndarray:
    """The variant of a 16 kHz clip that ``settings`` (from :func:`draw`) describe."""
    import soxr

    out = soxr.resample(audio.astype(np.float32), SAMPLE_RATE * settings["resample"], SAMPLE_RATE)
    out = colour(out.astype(np.float64), settings["colour"], settings["phases"])
    return set_peak(out, settings["peak_db"]).astype(np.float32)


def make_variant(job: tuple[int, int, str, str, str, int]) -> dict | None:
    """Write variant ``copy`` of clip ``index`` (unless it exists); returns its metadata row (None when the clip
    cannot be read)."""
    from asr.audio import AudioError, load_audio

    index, copy, src, text, out_dir, seed = job
    rel = f"clips/{index:06d}-{copy}.flac"
    path = Path(out_dir) / rel
    settings = draw(seed, index, copy)
    if not path.is_file():
        try:
            audio = load_audio(src)
        except AudioError as exc:
            print(f"skip {src}: {exc}", file=sys.stderr)
            return None
        write_flac(path, perturb(audio, settings))
    return {"audio": rel, "text": text, "source": src, **settings}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest", type=Path, help="clips to perturb (TSV or JSONL)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--copies", type=int, default=1, help="variants per clip (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    if args.copies < 1:
        p.error("--copies must be at least 1")
    items = read_manifest(args.manifest)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(i, k, str(u.audio), u.text, str(args.out), args.seed) for i, u in enumerate(items)
            for k in range(args.copies)]  # fmt: skip
    with Pool(max(1, args.workers)) as pool:
        rows = [r for r in pool.imap(make_variant, jobs, chunksize=16) if r]
    with open(args.out / "train.tsv", "w", encoding="utf-8") as tsv, \
            open(args.out / "train.meta.jsonl", "w", encoding="utf-8") as meta:  # fmt: skip
        for r in rows:
            tsv.write(f"{r['audio']}\t{r['text']}\n")
            meta.write(json.dumps(r) + "\n")
    print(f"{len(rows)} variants of {len(items)} clips in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
