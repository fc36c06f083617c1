"""Session 20's probe (section 15): asr.decoding.lexicon_search's search with a bigram word model in place of the
unigram (bigram counts of make_data.py's corpus without the EXCLUDE manifests' sentences, absolute discounting 0.75
interpolated with the lexicon's unigram), on s20-lexicon-tune.py's dumps; prints WER per ALPHA,BETA,OOV.

    python s20-bigram-probe.py DUMP.pkl LEXICON EXCLUDE1,EXCLUDE2,... ALPHA,BETA,OOV ...
"""

import math
import pickle
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "train")]
import make_data  # noqa: E402
from make_lexicon import words_of  # noqa: E402

import asr  # noqa: E402
from asr.decoding import Lexicon, joint_log_probs, token_pieces  # noqa: E402
from asr.evaluate import error_rates, make_normalizer  # noqa: E402


def bigrams(exclude):
    corpus = make_data.load_corpus()
    ex = make_data.excluded_sentences(corpus, [Path(e) for e in exclude])
    big, left = Counter(), Counter()
    for sents in corpus.values():
        for s in sents:
            if s in ex:
                continue
            w = ["<s>"] + words_of(s)
            for a, b in zip(w, w[1:], strict=False):
                big[(a, b)] += 1
                left[a] += 1
    follow = Counter(a for a, _ in big)
    return big, left, follow


def search(lp_t, lex, pieces, blank, bg):
    big, left, follow = bg
    D = 0.75

    def wscore(prev, w):
        if w not in lex.log_probs:
            return lex.oov
        pu = math.exp(lex.log_probs[w])
        n = left.get(prev, 0)
        if n:
            p = max(big.get((prev, w), 0) - D, 0) / n + D * follow[prev] / n * pu
        else:
            p = pu
        return lex.alpha * math.log(p)

    lp = lp_t.float().numpy()
    T, V = lp.shape
    never = np.array([p is None for p in pieces[:V]])
    never[blank] = True
    scores = np.where(never[None], -np.inf, lp)
    cand = np.argpartition(-scores, lex.top_k - 1, axis=1)[:, : lex.top_k]
    beams = {(): [0.0, -math.inf]}
    made = {(): (0.0, "", False, "<s>")}

    def extend(prefix, c):
        score, sp, ch, prev = made[prefix]
        st, piece = pieces[c]
        if st and sp:
            score += (0.0 if ch else wscore(prev, sp)) + lex.beta
            prev = sp if not ch else "<unk>"
            sp, ch = piece, False
        else:
            sp += piece
        if not ch and not lex.is_prefix(sp):
            score, ch = score + lex.oov, True
        return score, sp, ch, prev

    for t in range(T):
        row = lp[t]
        ids = [int(c) for c in cand[t] if scores[t, c] > lex.min_log_prob]
        nxt = {}
        for prefix, (pb, pl) in beams.items():
            tot = np.logaddexp(pb, pl)
            e = nxt.setdefault(prefix, [-math.inf, -math.inf])
            e[0] = np.logaddexp(e[0], tot + row[blank])
            last = prefix[-1] if prefix else None
            for c in ids:
                if c == last:
                    e[1] = np.logaddexp(e[1], pl + row[c])
                    src = pb + row[c]
                else:
                    src = tot + row[c]
                if src == -math.inf:
                    continue
                lo = (*prefix, c)
                if lo not in made:
                    made[lo] = extend(prefix, c)
                o = nxt.setdefault(lo, [-math.inf, -math.inf])
                o[1] = np.logaddexp(o[1], src)
        beams = dict(
            sorted(nxt.items(), key=lambda kv: np.logaddexp(*kv[1]) + made[kv[0]][0], reverse=True)[: lex.beam]
        )

    def final(p):
        score, sp, ch, prev = made[p]
        if sp:
            score += (0.0 if ch else wscore(prev, sp)) + lex.beta
        return float(np.logaddexp(*beams[p])) + score

    return list(max(beams, key=final))


pkl, lexf = sys.argv[1], sys.argv[2]
exclude = sys.argv[3].split(",")
settings = sys.argv[4:]
pipe = asr.load("mini")
pieces = token_pieces(pipe.tokenizer, len(pipe.tokenizer))
rows = pickle.load(open(pkl, "rb"))
norm = make_normalizer("en")
refs = [r["ref"] for r in rows]
joint = [joint_log_probs(r["dn"].float(), r["ctc"].float(), 2.0) for r in rows]
bg = bigrams(exclude)
for s in settings:
    a, b, o = map(float, s.split(","))
    lex = Lexicon.read(lexf, alpha=a, beta=b, oov=o)
    t0 = time.perf_counter()
    hyps = [pipe._text(search(lp, lex, pieces, 0, bg)) for lp in joint]
    print(
        "bigram",
        s,
        f"WER {error_rates(refs, hyps, norm).wer:.2f}",
        f"{1000 * (time.perf_counter() - t0) / len(rows):.0f} ms/clip",
        flush=True,
    )
