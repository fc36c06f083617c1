"""Ship a trained small model as ``asr/mini/model`` (what ``asr.load("mini")`` and the app's fallback load).

    python train/ship_mini.py EXPORTED_MODEL_DIR [--eval-real FILE] [--eval-kokoro FILE] [--ctc-weight W] \
        [--lexicon FILE --lexicon-weights ALPHA,BETA,OOV[,UNIGRAM_WEIGHT]] [--int8] [--out DIR]

EXPORTED_MODEL_DIR is an ``asr.train`` export (``speech.json``, ``backbone/``, ``projector.safetensors``,
``tokenizer/``; its weights are float16, as ``asr.train`` exports them, and ``load_small_model`` loads them as
float32). The whisper encoder is named as the shipped ``asr/mini/whisper-tiny-en`` (``speech.json``:
``../whisper-tiny-en``), the training settings are kept in ``speech.json`` without this machine's paths, and
``SHIPPED.json`` records where the model came from and the WER lines of the given evaluation outputs
(``python -m asr.evaluate ... > FILE``). ``--ctc-weight`` sets how the model's transcripts are read by default
(``speech.json``'s ``ctc_weight``: jointly with the CTC head; 0 or absent: the denoiser's own argmax).
``--lexicon`` ships a word lexicon (``train/make_lexicon.py``'s file, as ``lexicon.tsv.gz``) that this joint reading
spells its words from by default (``asr.decoding.lexicon_search``), with the weights of ``asr.decoding.Lexicon``;
without it the source's own lexicon, if any, is kept. ``--int8`` stores the backbone's and the projector's weight
matrices as int8 with a float16 scale per row (``asr.loading.quantize_int8``; ``backbone/model.int8.safetensors`` and
``projector.int8.safetensors``, half the size), which ``load_small_model`` reads back as float32; int8 files of the
source are copied as they are. ``--out DIR`` writes the model to ``DIR`` instead, to evaluate it as it would ship
(``speech.json`` names ``../whisper-tiny-en``, which ``load_small_model`` finds in ``asr/mini`` when ``DIR`` has no
such neighbour).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script, only train/ is on the path
    sys.path.insert(0, str(ROOT))

from asr.loading import INT8_FILE, load_small_model, quantize_int8, weights_file  # noqa: E402

MINI = ROOT / "asr" / "mini"
WHISPER = "whisper-tiny-en"
WER_LINE = re.compile(r"^(?:CTC head, greedy \(no denoising\)|\d+ steps): WER .*$")


def wer_lines(path: Path) -> list[str]:
    """The summary lines of an ``asr.evaluate`` output (CTC head and each step count). The last step count's summary
    is printed as two lines (``N steps:``, then ``WER ...``), and only there with ``--quiet``: joined here."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    joined = [f"{a} {b}" if re.fullmatch(r"\d+ steps:", a) and b.startswith("WER ") else a
              for a, b in zip(lines, lines[1:] + [""], strict=True)]  # fmt: skip
    return list(dict.fromkeys(line.split("  (")[0] for line in joined if WER_LINE.match(line)))


LEXICON = "lexicon.tsv.gz"


def ship(
    src: Path, evals: dict[str, Path], ctc_weight: float | None = None, lexicon: Path | None = None,
    lexicon_weights: tuple[float, ...] | None = None, int8: bool = False, out: Path | None = None,
) -> Path:  # fmt: skip
    info = json.loads((src / "speech.json").read_text(encoding="utf-8"))
    if ctc_weight is not None:
        info["ctc_weight"] = ctc_weight
    if lexicon is not None:
        weights = dict(zip(("alpha", "beta", "oov", "unigram_weight"), lexicon_weights or (), strict=False))
        info["lexicon"] = {"file": "", **weights}
    elif "lexicon" in info:
        lexicon = src / info["lexicon"]["file"]
    if lexicon is not None:  # shipped as lexicon.tsv(.gz): Lexicon.read knows a gzip file by its name
        info["lexicon"]["file"] = LEXICON if lexicon.suffix == ".gz" else LEXICON.removesuffix(".gz")
    if not (MINI / WHISPER / "config.json").is_file():
        raise SystemExit(f"{MINI / WHISPER} is missing: the shipped model names it as its encoder")
    if Path(info["whisper"]).name != WHISPER:
        raise SystemExit(f"{src} was trained on the encoder {info['whisper']!r}, not the shipped {WHISPER}")
    out = out or MINI / "model"
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "backbone").mkdir(parents=True)
    for name in ("config.json", "generation_config.json"):
        if (src / "backbone" / name).is_file():
            shutil.copy2(src / "backbone" / name, tmp / "backbone" / name)
    for folder, stem in (("backbone", "model"), (".", "projector")):
        weights = weights_file(src / folder, stem)
        if int8 and not weights.name.endswith(INT8_FILE):
            save_file(quantize_int8(load_file(weights)), tmp / folder / f"{stem}{INT8_FILE}", {"format": "pt"})
        else:
            shutil.copy2(weights, tmp / folder / weights.name)
    shutil.copytree(src / "tokenizer", tmp / "tokenizer")
    if lexicon is not None:
        shutil.copy2(lexicon, tmp / info["lexicon"]["file"])
    info["whisper"] = f"../{WHISPER}"
    train = info.get("train", {})
    for key in ("manifest", "out", "model", "cache_dir", "whisper", "tokenizer", "prefetch", "wait_for"):
        if isinstance(train.get(key), str) and "/" in train[key]:
            train[key] = Path(train[key]).name  # the name only: this machine's paths mean nothing elsewhere
    (tmp / "speech.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    before = src / "SHIPPED.json"  # shipping the shipped model again (e.g. with a lexicon, as int8): what it was
    if before.is_file():  # made from stays: the export's name and its backbone file's SHA-256
        made_from = json.loads(before.read_text())
    else:
        digest = hashlib.sha256(weights_file(src / "backbone", "model").read_bytes()).hexdigest()
        made_from = {"source": f"{src.parent.name}/{src.name}", "backbone_sha256": digest}
    shipped = {
        "source": made_from["source"],
        "backbone_sha256": made_from["backbone_sha256"],
        "evaluation": {name: wer_lines(path) for name, path in evals.items()},
    }
    (tmp / "SHIPPED.json").write_text(json.dumps(shipped, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="an asr.train export folder")
    p.add_argument("--eval-real", type=Path, help="asr.evaluate output on the real-speech set")
    p.add_argument("--eval-kokoro", type=Path, help="asr.evaluate output on the held-out Kokoro set")
    p.add_argument("--ctc-weight", type=float, help="the default joint reading with the CTC head (speech.json)")
    p.add_argument("--lexicon", type=Path, help="a word lexicon for that reading (train/make_lexicon.py's file)")
    p.add_argument("--lexicon-weights", type=lambda t: tuple(float(x) for x in t.split(",")),
                   help="ALPHA,BETA,OOV[,UNIGRAM_WEIGHT]: asr.decoding.Lexicon's weights (default: its "
                   "defaults)")  # fmt: skip
    p.add_argument("--int8", action="store_true", help="store the backbone's and the projector's weight matrices as "
                   "int8 with a scale per row (asr.loading.quantize_int8: half the size; read back as "
                   "float32)")  # fmt: skip
    p.add_argument("--out", type=Path, help="write the model there instead of asr/mini/model (to evaluate it as it "
                   "would ship; its encoder is still the shipped one)")  # fmt: skip
    args = p.parse_args(argv)
    if args.lexicon_weights is not None and (args.lexicon is None or len(args.lexicon_weights) not in (3, 4)):
        p.error("--lexicon-weights takes ALPHA,BETA,OOV[,UNIGRAM_WEIGHT] and goes with --lexicon")
    evals = {k: v for k, v in (("real", args.eval_real), ("kokoro", args.eval_kokoro)) if v is not None}
    out = ship(args.model, evals, args.ctc_weight, args.lexicon, args.lexicon_weights, args.int8, args.out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    whisper = sum(f.stat().st_size for f in (MINI / WHISPER).rglob("*") if f.is_file())
    print(f"{out}: {size / 1e6:.1f} MB (+ the encoder {whisper / 1e6:.1f} MB = {(size + whisper) / 1e6:.1f} MB)")
    speech, _, _ = load_small_model(out)  # it loads
    words = len(speech.lexicon.words) if speech.lexicon else 0
    pairs = sum(map(len, speech.lexicon.pairs.values())) if speech.lexicon else 0
    print(f"loads: canvas {speech.canvas_length} ({speech.canvas}), ctc_weight {speech.ctc_weight:g}, {words} words, "
          f"{pairs} word pairs, "
          f"torch {torch.__version__}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
