"""Session 21's grid of the lexicon reading's weights with word pairs (section 16), on s20-lexicon-tune.py's dumps:

    python s21-lexicon-grid.py DUMP.pkl LEXICON ALPHA,BETA,OOV,UNIGRAM_WEIGHT ...

prints the corpus WER (``asr.evaluate``'s normaliser and counts) of ``asr.decoding.lexicon_search`` over the dumped
joint log-probabilities (weight 2) per setting, and the search's time per clip (one thread). The lexicons:
``train/make_lexicon.py --bigrams N --exclude ...``; for the dev dump without the dev clips' sentences too.
Outputs: ``s21-lexicon-grid-dev.txt`` (19 000 pairs, the choice), ``s21-lexicon-grid-{dev,real}-30k.txt``.
"""

import pickle
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import asr  # noqa: E402
from asr.decoding import Lexicon, ctc_collapse, joint_log_probs, lexicon_search, token_pieces  # noqa: E402
from asr.evaluate import error_rates, make_normalizer  # noqa: E402


def main(dumped: str, lexicon_file: str, settings: list[str]) -> None:
    torch.set_num_threads(1)
    pipe = asr.load("mini")
    pieces = token_pieces(pipe.tokenizer, len(pipe.tokenizer))
    with open(dumped, "rb") as f:
        rows = pickle.load(f)
    norm, refs = make_normalizer("en"), [r["ref"] for r in rows]
    joint = [joint_log_probs(r["dn"].float(), r["ctc"].float(), 2.0) for r in rows]
    read = Lexicon.read(lexicon_file)
    for setting in settings:
        alpha, beta, oov, unigram_weight = map(float, setting.split(","))
        lexicon = Lexicon(read.words, read.log_probs, alpha=alpha, beta=beta, oov=oov, pairs=read.pairs,
                          unigram_weight=unigram_weight)  # fmt: skip
        started = time.perf_counter()
        hyps = [pipe._text(ctc_collapse(lexicon_search(lp, lexicon, pieces, 0), 0)) for lp in joint]
        ms = 1000 * (time.perf_counter() - started) / len(rows)
        print(Path(dumped).stem, Path(lexicon_file).name, setting,
              f"WER {error_rates(refs, hyps, norm).wer:.2f} {ms:.0f} ms/clip", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
