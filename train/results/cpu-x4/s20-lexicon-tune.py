"""Session 20's tuning of the lexicon reading's weights (section 15), on clips that are in neither evaluation set.

    python s20-lexicon-tune.py dump MANIFEST OUT.pkl       # mini's 8-step joint-reading inputs of every clip
    python s20-lexicon-tune.py grid OUT.pkl LEXICON ALPHA,BETA,OOV ...   # WER of the lexicon reading per setting

``dump`` transcribes each clip with ``mini`` (8 steps, seed 0) and keeps, per slot, the denoiser's last and the CTC
head's log-probabilities as the joint reading receives them (``asr.pipeline.fuse_ctc``, watched); ``grid`` reads them
with ``asr.decoding.lexicon_search`` (the joint log-probabilities at weight 2) for each setting and prints the corpus
WER (``asr.evaluate``'s normaliser and counts) and the search's time per clip. Session 20: 100 clips of
``make_data.py --engines kokoro,kokoro-blend --seed 20`` (training voices, new sentences), lexicon from
``train/make_lexicon.py --exclude`` those clips and both evaluation sets; outputs ``s20-lexicon-grid-dev*.txt``.
"""

import pickle
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import asr  # noqa: E402
import asr.pipeline as P  # noqa: E402
from asr.decoding import Lexicon, ctc_collapse, joint_log_probs, lexicon_search, token_pieces  # noqa: E402
from asr.evaluate import error_rates, make_normalizer, read_manifest  # noqa: E402


def dump(manifest: str, out: str) -> None:
    torch.set_num_threads(1)
    pipe = asr.load("mini")
    seen = []
    fuse = P.fuse_ctc

    def watch(logits, ctc_logits, weight):
        seen.append((torch.log_softmax(logits.float(), -1), torch.log_softmax(ctc_logits.float(), -1)))
        return fuse(logits, ctc_logits, weight)

    P.fuse_ctc = watch
    rows = []
    for u in read_manifest(manifest):
        seen.clear()
        t = pipe.transcribe(str(u.audio), steps=8, seed=0, options=asr.DenoiseOptions(steps=8, lexicon=False))
        dn = torch.cat([d.reshape(-1, d.shape[-1]) for d, _ in seen])  # windows in order, their slots in a row
        ctc = torch.cat([c.reshape(-1, c.shape[-1]) for _, c in seen])
        rows.append({"ref": u.text, "hyp": t.text, "dn": dn.half(), "ctc": ctc.half()})
    with open(out, "wb") as f:
        pickle.dump(rows, f)


def grid(dumped: str, lexicon_file: str, settings: list[str], make=None, label: str = "") -> None:
    """``make``, if given, turns each setting's Lexicon into the one to search with (s20-bigram-probe.py)."""
    pipe = asr.load("mini")
    pieces = token_pieces(pipe.tokenizer, len(pipe.tokenizer))
    with open(dumped, "rb") as f:
        rows = pickle.load(f)
    norm = make_normalizer("en")
    refs = [r["ref"] for r in rows]
    joint = [joint_log_probs(r["dn"].float(), r["ctc"].float(), 2.0) for r in rows]
    for setting in settings:
        alpha, beta, oov = map(float, setting.split(","))
        lexicon = Lexicon.read(lexicon_file, alpha=alpha, beta=beta, oov=oov)
        lexicon = make(lexicon) if make else lexicon
        started = time.perf_counter()
        hyps = [pipe._text(ctc_collapse(lexicon_search(lp, lexicon, pieces, 0), 0)) for lp in joint]
        ms = 1000 * (time.perf_counter() - started) / len(rows)
        print(label + setting, f"WER {error_rates(refs, hyps, norm).wer:.2f}", f"{ms:.0f} ms/clip", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(sys.argv[2], sys.argv[3])
    else:
        grid(sys.argv[2], sys.argv[3], sys.argv[4:])
