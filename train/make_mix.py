"""A training mix: the rows of several manifests in one TSV, each part listed a chosen number of times.

    python train/make_mix.py OUT.tsv PART [PART ...]        # PART: MANIFEST[:COPIES[:FIRST]]

``MANIFEST`` is a TSV or JSONL manifest as ``asr.evaluate`` reads it (paths relative to its folder); its rows are
written ``COPIES`` times (default 1; a repeated clip is seen that many times per epoch), only its first ``FIRST``
rows when given. Paths in OUT are relative to OUT's folder, so the mix and its parts can move together. Prints how
many rows, clips and hours each part gives. ``asr.train`` shuffles, so the order of the rows does not matter.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script, only train/ is on the path
    sys.path.insert(0, str(ROOT))

from asr.evaluate import read_manifest  # noqa: E402


def parse_part(spec: str) -> tuple[Path, int, int | None]:
    """``MANIFEST[:COPIES[:FIRST]]`` -> (manifest, copies, first or None)."""
    path, *rest = spec.split(":")
    if len(rest) > 2 or not all(r.isdigit() for r in rest) or (rest and int(rest[0]) < 1):
        raise argparse.ArgumentTypeError(f"{spec!r}: expected MANIFEST[:COPIES[:FIRST]], COPIES >= 1")
    copies = int(rest[0]) if rest else 1
    first = int(rest[1]) if len(rest) == 2 else None
    return Path(path), copies, first


def make_mix(out: Path, parts: list[tuple[Path, int, int | None]]) -> list[dict]:
    """Write the mix to ``out``; returns per part its manifest, copies, clips, rows and hours of audio (once)."""
    lines: list[str] = []
    summary = []
    for manifest, copies, first in parts:
        utts = read_manifest(manifest)[:first]
        for u in utts:
            if "\t" in u.text or "\n" in u.text:
                raise ValueError(f"{manifest}: a text holds a tab or newline: {u.text!r}")
        rows = [f"{os.path.relpath(u.audio.resolve(), out.resolve().parent)}\t{u.text}" for u in utts]
        lines += rows * copies
        hours = sum(sf.info(str(u.audio)).duration for u in utts) / 3600
        summary.append({"manifest": str(manifest), "copies": copies, "clips": len(utts),
                        "rows": len(rows) * copies, "hours": hours})  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the mix to write (TSV)")
    p.add_argument("parts", nargs="+", type=parse_part, help="MANIFEST[:COPIES[:FIRST]]")
    args = p.parse_args(argv)
    summary = make_mix(args.out, args.parts)
    total = sum(s["rows"] for s in summary)
    for s in summary:
        share, hours = 100 * s["rows"] / total, s["hours"]
        print(f"{s['manifest']}: {s['clips']} clips x {s['copies']} = {s['rows']} rows ({share:.0f} %), {hours:.2f} h")
    print(f"{args.out}: {total} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
