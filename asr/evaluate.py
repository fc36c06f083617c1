"""Corpus WER/CER and speed of a model on a manifest of (audio, reference text) pairs.

    python -m asr.evaluate --manifest test.tsv [--model ID] [--steps 8,16] [--seed 0] [--language en]

A manifest is a TSV of ``audio_path<TAB>reference text`` lines (paths relative to the manifest; blank lines and
lines starting with ``#`` are skipped; an optional header line names the columns, further columns are ignored)
or a JSONL file (``.jsonl``/``.json``) of objects with ``audio`` and ``text``.
Texts are normalised with Whisper's normalisers (English: ``EnglishTextNormalizer``; other languages:
``BasicTextNormalizer``) and counted with jiwer over the whole corpus. RTFx is audio seconds / processing seconds
(file -> text, everything included) after one untimed warm-up utterance. The last line printed is
``WER <x>% CER <y>% RTFx <z>`` for the last step count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Utterance:
    """One manifest entry: an audio file and its reference transcript."""

    audio: Path
    text: str


HEADER_AUDIO = ("audio", "audio_path", "audio_filepath", "path", "file", "filename", "wav")
HEADER_TEXT = ("text", "transcript", "transcription", "reference", "sentence")


class ManifestError(ValueError):
    """The manifest cannot be read (missing file, bad line, missing fields)."""


def read_manifest(path: str | Path, check_files: bool = True) -> list[Utterance]:
    """Read a TSV (``audio<TAB>text``) or JSONL (``{"audio": ..., "text": ...}``) manifest.

    Relative audio paths are resolved against the manifest's folder. A TSV may start with a header line (first column
    ``audio``/``path``/``file``...; the text column is the one named ``text``/``transcript``..., else the second);
    columns after the text are ignored. Raises :class:`ManifestError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no such manifest: {path}")
    items = parse_manifest(path.read_text(encoding="utf-8").splitlines(), path, check_files)
    if not items:
        raise ManifestError(f"{path} lists no utterances")
    return items


def parse_manifest(lines: list[str], path: Path, check_files: bool = True) -> list[Utterance]:
    """The utterances of ``lines`` of the manifest ``path`` (its suffix says JSONL or TSV; relative audio paths are
    resolved against its folder), as :func:`read_manifest` reads them; none is not an error here."""
    base = path.parent
    items: list[Utterance] = []
    jsonl = path.suffix.lower() in (".jsonl", ".json", ".ndjson")
    audio_col, text_col = 0, 1
    first = True
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        if jsonl:
            try:
                row = json.loads(line)
                audio, text = row["audio"], row["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ManifestError(f"{path}:{number}: expected a JSON object with 'audio' and 'text' ({exc})") from exc
        else:
            cols = line.split("\t")
            if first and cols[0].strip().lower() in HEADER_AUDIO and not (base / cols[0]).exists():
                names = [c.strip().lower() for c in cols]
                audio_col = 0
                text_col = next((i for i, n in enumerate(names) if n in HEADER_TEXT), 1)
                first = False
                continue  # a header line
            if len(cols) <= max(audio_col, text_col):
                raise ManifestError(f"{path}:{number}: expected 'audio_path<TAB>text'")
            audio, text = cols[audio_col], cols[text_col]
        first = False
        audio_path = Path(audio) if Path(audio).is_absolute() else base / audio
        if check_files and not audio_path.is_file():
            raise ManifestError(f"{path}:{number}: no such audio file {audio_path}")
        items.append(Utterance(audio_path, str(text).strip()))
    return items


def make_normalizer(language: str = "en") -> Callable[[str], str]:
    """Whisper's English normaliser for ``en``/``english``, the basic one for any other language."""
    if language.lower() in ("en", "english", "en-us", "en-gb", "en_us", "en_gb"):
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


@dataclass
class ErrorRates:
    """Corpus counts and rates (percent). ``wer``/``cer`` are errors / reference words (characters) x 100."""

    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def error_rates(
    references: list[str], hypotheses: list[str], normalize: Callable[[str], str] | None = None
) -> ErrorRates:
    """Corpus WER and CER (in percent) with jiwer, after ``normalize`` (identity when None).

    Whitespace is collapsed after normalising. Pairs whose normalised reference is empty count their hypothesis
    words as insertions (jiwer's own behaviour); an all-empty corpus has no rate and raises ``ValueError``.
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    norm = normalize or (lambda s: s)
    refs = [" ".join(norm(r).split()) for r in references]
    hyps = [" ".join(norm(h).split()) for h in hypotheses]
    if not any(refs):
        raise ValueError("every reference is empty after normalisation: WER is undefined")
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    ref_words = sum(len(r.split()) for r in refs)
    return ErrorRates(
        wer=100.0 * words.wer,
        cer=100.0 * chars.cer,
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        reference_words=ref_words,
    )


@dataclass
class UtteranceResult:
    audio: str
    seconds: float  # audio duration
    processing: float  # wall seconds for this utterance
    reference: str
    hypothesis: str
    word_errors: int
    words: int
    stages: dict[str, float] = field(default_factory=dict)  # the transcript's wall seconds per pipeline stage


@dataclass
class StepsResult:
    steps: int
    rates: ErrorRates
    rtfx: float
    audio_seconds: float
    processing_seconds: float
    utterances: list[UtteranceResult] = field(default_factory=list)

    def summary(self) -> str:
        """``WER <x>% CER <y>% RTFx <z>``."""
        return f"WER {self.rates.wer:.2f}% CER {self.rates.cer:.2f}% RTFx {self.rtfx:.1f}"

    @property
    def stages(self) -> dict[str, float]:
        """Wall seconds per pipeline stage (``Transcript.timings.stages``), summed over the utterances."""
        total: dict[str, float] = {}
        for u in self.utterances:
            for name, seconds in u.stages.items():
                total[name] = total.get(name, 0.0) + seconds
        return total

    def stage_line(self, label: str) -> str:
        """Where an utterance's time went, on average: ``<label>: features 10 ms, ..., denoise 294 ms; in all 460 ms``
        (the rest of "in all" is decoding the file, splitting and reading the canvas back)."""
        n = max(1, len(self.utterances))
        parts = ", ".join(f"{name} {1000 * seconds / n:.0f} ms" for name, seconds in self.stages.items())
        return f"time per utterance, {label}: {parts}; in all {1000 * self.processing_seconds / n:.0f} ms"


def evaluate(
    pipeline,
    utterances: list[Utterance],
    steps: int,
    seed: int = 0,
    language: str = "en",
    warmup: bool = True,
    progress: bool = False,
    ctc: bool = False,
    start: str = "noise",
    ctc_weight: float | None = None,
    lexicon: bool | None = None,
    draw: str | None = None,
) -> StepsResult:
    """Transcribe every utterance with ``steps`` denoising steps and score the corpus. ``ctc``: score the CTC head's
    greedy transcripts instead (:meth:`asr.Pipeline.transcribe_ctc`; ``steps`` is then 0). ``start``: the first
    canvas (``DenoiseOptions.start``); ``ctc_weight``: read the final canvas jointly with the CTC head
    (``DenoiseOptions.ctc_weight``; None: the model's own setting); ``lexicon``: spell that reading's words from the
    model's lexicon (``DenoiseOptions.lexicon``; None: the model's own setting); ``draw``: how tokens are drawn
    (``DenoiseOptions.draw``; None: the pipeline's choice)."""
    import torch

    from .decoding import DenoiseOptions

    options = None if ctc else DenoiseOptions(steps, start=start, ctc_weight=ctc_weight, lexicon=lexicon, draw=draw)

    def transcribe(path: str):
        if ctc:
            return pipeline.transcribe_ctc(path)
        return pipeline.transcribe(path, seed=seed, options=options, record_steps=False)

    steps = 0 if ctc else steps
    normalize = make_normalizer(language)
    if warmup:
        transcribe(str(utterances[0].audio))
    iterator = utterances
    if progress:
        from tqdm import tqdm

        label = "ctc" if ctc else f"{steps} steps"
        iterator = tqdm(utterances, desc=label, unit="utt", file=sys.stderr, leave=False)
    results: list[UtteranceResult] = []
    for utt in iterator:
        started = time.perf_counter()
        transcript = transcribe(str(utt.audio))
        if str(getattr(pipeline, "device", "cpu")).startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        single = error_rates([utt.text], [transcript.text], normalize) if normalize(utt.text).strip() else None
        results.append(
            UtteranceResult(
                audio=str(utt.audio),
                seconds=transcript.timings.audio_seconds,
                processing=elapsed,
                reference=utt.text,
                hypothesis=transcript.text,
                word_errors=single.word_errors if single else len(normalize(transcript.text).split()),
                words=single.reference_words if single else 0,
                stages=dict(getattr(transcript.timings, "stages", {})),  # a stand-in transcriber may keep none
            )
        )
    rates = error_rates([r.reference for r in results], [r.hypothesis for r in results], normalize)
    audio_s = sum(r.seconds for r in results)
    proc_s = sum(r.processing for r in results)
    return StepsResult(steps, rates, audio_s / proc_s if proc_s > 0 else float("inf"), audio_s, proc_s, results)


def format_table(result: StepsResult, base: Path | None = None, width: int = 60, label: str | None = None) -> str:
    """A per-utterance table: file, duration, errors/words, processing time, hypothesis (and reference if wrong).
    ``label`` names what was run in the heading and the summary line (default: the step count)."""
    title = label or (f"{result.steps} steps" if result.steps else "CTC head, greedy")
    lines = [f"## {title}", f"{'audio':<28} {'dur s':>6} {'err/words':>9} {'proc s':>7}  hypothesis"]
    for r in result.utterances:
        name = Path(r.audio)
        if base is not None:
            try:
                name = name.relative_to(base)
            except ValueError:
                pass
        hyp = r.hypothesis if len(r.hypothesis) <= width else r.hypothesis[: width - 3] + "..."
        lines.append(
            f"{str(name)[-28:]:<28} {r.seconds:6.2f} {f'{r.word_errors}/{r.words}':>9} {r.processing:7.3f}  {hyp}"
        )
        if r.word_errors:
            ref = r.reference if len(r.reference) <= width else r.reference[: width - 3] + "..."
            lines.append(f"{'':<28} {'':>6} {'':>9} {'ref':>7}  {ref}")
    rates = result.rates
    lines.append(
        f"{label or f'{result.steps} steps'}: {result.summary()}  (S {rates.substitutions} D {rates.deletions} "
        f"I {rates.insertions} / {rates.reference_words} words; {result.audio_seconds:.1f} s audio in "
        f"{result.processing_seconds:.2f} s)"
    )
    return "\n".join(lines)


def parse_steps(text: str) -> list[int]:
    """``"8,16"`` -> ``[8, 16]`` (each at least 1)."""
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--steps takes comma-separated integers, got {text!r}") from exc
    if not steps or any(s < 1 for s in steps):
        raise argparse.ArgumentTypeError(f"--steps needs integers >= 1, got {text!r}")
    return steps


def parser() -> argparse.ArgumentParser:
    from .decoding import DRAWS, STARTS
    from .loading import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m asr.evaluate", description="Corpus WER/CER and RTFx on a manifest.")
    p.add_argument("--manifest", required=True, type=Path, help="TSV (audio<TAB>text) or JSONL (audio, text)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"anything asr.load takes (default {DEFAULT_MODEL})")
    p.add_argument("--steps", type=parse_steps, default=[16], help="comma-separated step counts (default 16)")
    p.add_argument("--seed", type=int, default=0, help="denoising seed for every utterance (default 0)")
    p.add_argument("--start", choices=STARTS, default="noise", help="the first canvas: uniform random tokens "
                   "(noise, default) or the CTC head's reading (ctc; models with an aligned canvas)")  # fmt: skip
    p.add_argument("--ctc-weight", type=float, default=None, help="read the final canvas jointly with the CTC head, "
                   "with this weight (models with an aligned canvas); 0: the denoiser's argmax (default: the model's "
                   "own setting; mini: 2)")  # fmt: skip
    p.add_argument("--no-lexicon", action="store_true", help="read the final canvas position by position, without "
                   "the model's word lexicon (models that ship one, such as mini)")  # fmt: skip
    p.add_argument("--draw", choices=DRAWS, default=None, help="how tokens are drawn: exact (generate()'s random "
                   "numbers) or cdf (one per position, faster on the CPU); default: the pipeline's choice (mini on "
                   "the CPU: cdf)")  # fmt: skip
    p.add_argument("--language", default="en", help="en: Whisper's English normaliser; else the basic one")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    p.add_argument("--ctc", action="store_true", help="also score the CTC head's greedy transcripts (encoder + "
                   "projector + lm_head, no denoising): a diagnostic of the audio side during training")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no per-utterance table, no progress bar")
    return p


def _as_json(r: StepsResult) -> dict:
    return {"steps": r.steps, "wer": r.rates.wer, "cer": r.rates.cer, "rtfx": r.rtfx, "stages": r.stages,
            "utterances": [u.__dict__ for u in r.utterances]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parser().parse_args(argv)
    import torch

    from .loading import ModelLoadError, load

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        utterances = read_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        utterances = utterances[: args.limit]
    try:
        started = time.perf_counter()
        pipe = load(args.model, device=args.device)  # hub id, adapter, small-model folder, mini, tiny-random
        load_s = time.perf_counter() - started
    except ModelLoadError as exc:
        print(f"error: cannot load {args.model}: {exc}", file=sys.stderr)
        return 2
    from .decoding import DenoiseOptions

    asked = DenoiseOptions(start=args.start, ctc_weight=args.ctc_weight, lexicon=False if args.no_lexicon else None,
                           draw=args.draw)  # fmt: skip
    resolved = pipe.reading(asked)  # the model's own settings where the arguments leave them to it
    weight, lexicon = resolved.ctc_weight, resolved.lexicon
    reading = f"read jointly with the CTC head, weight {weight:g}" if weight > 0 else "the denoiser's argmax"
    reading += ", words spelled from the model's lexicon" if lexicon else ""
    reading += f"; tokens drawn {resolved.draw}"
    print(f"model {pipe.name} on {pipe.device}, loaded in {load_s:.2f} s; {len(utterances)} utterances; final canvas: "
          f"{reading}")  # fmt: skip
    ctc = None
    if args.ctc:
        ctc = evaluate(pipe, utterances, 0, args.seed, args.language, progress=not args.quiet, ctc=True)
        if not args.quiet:
            print(format_table(ctc, base=args.manifest.parent))
    results = []
    for steps in args.steps:
        result = evaluate(pipe, utterances, steps, args.seed, args.language, progress=not args.quiet, start=args.start,
                          ctc_weight=args.ctc_weight, lexicon=asked.lexicon, draw=args.draw)  # fmt: skip
        results.append(result)
        if not args.quiet:
            print(format_table(result, base=args.manifest.parent))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": pipe.name,
                    "manifest": str(args.manifest),
                    "seed": args.seed,
                    "start": args.start,
                    "ctc_weight": weight,
                    "lexicon": lexicon,
                    "draw": resolved.draw,
                    "results": [_as_json(r) for r in results],
                    "ctc": _as_json(ctc) if ctc else None,
                },
                indent=1,
            ),
            encoding="utf-8",
        )
    for label, r in ([("CTC head", ctc)] if ctc else []) + [(f"{r.steps} steps", r) for r in results]:
        if r.stages:
            print(r.stage_line(label))
    if ctc:
        print(f"CTC head, greedy (no denoising): {ctc.summary()}")
    for r in results[:-1]:
        print(f"{r.steps} steps: {r.summary()}")
    print(f"{results[-1].steps} steps:")
    print(results[-1].summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
