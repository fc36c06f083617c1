"""Command line: ``python -m asr AUDIO... [--model ID] [--steps N] [--start S] [--seed S] [--format F] ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("txt", "json", "srt", "vtt")


FALLBACK_MODEL = "mini"  # used, with a note on stderr, when --model is not given and the default cannot load


def parser() -> argparse.ArgumentParser:
    from .decoding import DRAWS, STARTS
    from .loading import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m asr", description="Transcribe audio with diffusion-gemma-asr.")
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    p.add_argument(
        "--model",
        default=None,
        help=f"hub id, adapter folder/.pt, mini (the small model trained by this project), a small-model folder, or "
        f"tiny-random (default {DEFAULT_MODEL}; where it cannot load, e.g. without a GPU, {FALLBACK_MODEL})",
    )
    p.add_argument("--steps", type=int, default=16, help="denoising steps (default 16)")
    p.add_argument("--start", choices=STARTS, default="noise",
                   help="the first canvas: uniform random tokens (default) or, for models with an aligned canvas such "
                   "as mini, the CTC head's reading, which the denoiser refines (better in 1-2 steps)")  # fmt: skip
    p.add_argument("--ctc-weight", type=float, default=None,
                   help="for models with an aligned canvas such as mini: read the final canvas jointly with the CTC "
                   "head, argmax of the denoiser's log-probabilities + this weight x the head's; 0: the denoiser's own "
                   "argmax (default: the model's own setting; mini: 2, its most accurate)")  # fmt: skip
    p.add_argument("--no-lexicon", action="store_true",
                   help="read that joint canvas position by position, without the model's word lexicon (mini ships "
                   "one: by default its words are spelled from it)")  # fmt: skip
    p.add_argument("--draw", choices=DRAWS, default=None,
                   help="how tokens are drawn: exact (generate()'s random numbers) or cdf (one per position, faster on "
                   "the CPU); default: the pipeline's choice (mini on the CPU: cdf)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="random seed, for reproducible output")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--format", choices=FORMATS, default="txt", help="output format (default txt)")
    p.add_argument("--output-dir", type=Path, default=None, help="write AUDIO_STEM.FORMAT files here instead of stdout")
    p.add_argument("--no-steps", action="store_true", help="json: leave out the per-step canvases")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.steps < 1:
        parser().error("--steps must be at least 1")
    from .audio import AudioError
    from .loading import DEFAULT_MODEL, ModelLoadError, load

    model = args.model or DEFAULT_MODEL
    try:
        pipe = load(model, device=args.device)
    except ModelLoadError as exc:
        if args.model is not None:  # a model asked for by name is never swapped for another
            print(f"error: cannot load {model}: {exc}", file=sys.stderr)
            return 2
        print(f"note: cannot load {model} ({exc}); using {FALLBACK_MODEL}, the small model trained by this project, "
              "which is far less accurate (pass --model to choose)", file=sys.stderr)  # fmt: skip
        try:
            pipe = load(FALLBACK_MODEL, device=args.device)
        except ModelLoadError as exc2:
            print(f"error: cannot load {FALLBACK_MODEL} either: {exc2}", file=sys.stderr)
            return 2
    joint = args.ctc_weight is not None and args.ctc_weight > 0
    asked = [name for name, on in (("--start ctc", args.start == "ctc"), ("--ctc-weight", joint)) if on]
    if asked and pipe.model.canvas != "aligned":
        print(f"error: {' and '.join(asked)} needs a model with an aligned canvas (mini); {pipe.name} has a packed one",
              file=sys.stderr)  # fmt: skip
        return 2
    from .decoding import DenoiseOptions

    try:
        lexicon = False if args.no_lexicon else None
        options = DenoiseOptions(steps=args.steps, start=args.start, ctc_weight=args.ctc_weight, lexicon=lexicon,
                                 draw=args.draw)  # fmt: skip
    except ValueError as exc:
        parser().error(str(exc))
    failed = 0
    for path in args.audio:
        try:
            transcript = pipe.transcribe(path, seed=args.seed, options=options, record_steps=not args.no_steps)
        except AudioError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        text = transcript.to_json(steps=not args.no_steps) if args.format == "json" else transcript.format(args.format)
        if args.output_dir:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            out = args.output_dir / f"{Path(path).stem}.{args.format}"
            out.write_text(text, encoding="utf-8")
            print(f"{path} -> {out}", file=sys.stderr)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 1 if failed else 0
