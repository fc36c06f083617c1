"""Session 21's first probe (section 16): where a lexicon's counts come from, on s20-lexicon-tune.py's dumps.

    LAM=0.5 [TOPK=N] python s21-lexicon-sources-probe.py DUMP.pkl KIND ALPHA,BETA,OOV ...

KIND: ``base`` (session 20's lexicon: the dev one for a dump named dev*, else the shipped one as of session 20; paths
below), ``wf+`` (wordfreq's 150 000 most frequent English words with their frequencies, plus every base word once),
``ss+`` (symspellpy's 82 765 words with their counts, plus every base word once), ``ss+bi`` (``ss+`` and symspellpy's
word pairs, interpolated with weight LAM on the unigram, the TOPK most frequent pairs if set). Words with session 20's
regex (letters and inner apostrophes). Needs ``pip install wordfreq symspellpy``. Output:
``s21-lexicon-sources-probe.txt``; make_lexicon.py and asr.decoding.Lexicon now build the ``ss+bi`` kind.
"""

import dataclasses
import gzip
import importlib.util
import math
import os
import re
import sys
from collections import Counter
from pathlib import Path

import symspellpy
import wordfreq

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "train")]
from asr.decoding import Lexicon  # noqa: E402

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")  # session 20's make_lexicon.words_of
SS = Path(os.path.dirname(symspellpy.__file__))
LAM = float(os.environ.get("LAM", "0.5"))
TOPK = int(os.environ.get("TOPK", "0"))


def write(counts: Counter, out: str) -> None:
    with gzip.open(out, "wt", encoding="utf-8") as f:
        for w, c in counts.most_common():
            f.write(f"{w}\t{c}\n")


def ss_unigrams() -> Counter:
    c = Counter()
    for line in open(SS / "frequency_dictionary_en_82_765.txt"):
        w, n = line.split()
        if WORD.fullmatch(w):
            c[w] += int(n)
    return c


def wf_unigrams(n: int = 150000) -> Counter:
    c = Counter()
    for w in wordfreq.top_n_list("en", n):
        w = w.replace("\u2019", "'")
        if WORD.fullmatch(w):
            c[w] += max(1, round(wordfreq.word_frequency(w, "en") * 1e9))
    return c


def ss_bigrams() -> tuple[Counter, Counter]:
    pairs = Counter()
    for line in open(SS / "frequency_bigramdictionary_en_243_342.txt"):
        a, b, n = line.split()
        if WORD.fullmatch(a) and WORD.fullmatch(b):
            pairs[(a, b)] += int(n)
    if TOPK:
        pairs = Counter(dict(pairs.most_common(TOPK)))
    before = Counter()
    for (a, _), n in pairs.items():
        before[a] += n
    return pairs, before


@dataclasses.dataclass(frozen=True)
class Bigram(Lexicon):
    pair_counts: dict = dataclasses.field(default_factory=dict)
    before: dict = dataclasses.field(default_factory=dict)

    def word_score(self, word: str, previous: str = "") -> float:
        lp = self.log_probs.get(word)
        if lp is None:
            return self.oov
        n = self.before.get(previous, 0)
        if not n:
            return self.alpha * lp
        p = self.pair_counts.get((previous, word), 0) / n  # the pair's share of the listed pairs after previous
        return self.alpha * math.log((1 - LAM) * p + LAM * math.exp(lp))


def main() -> None:
    dump, kind, settings = sys.argv[1], sys.argv[2], sys.argv[3:]
    spec = importlib.util.spec_from_file_location("tune", Path(__file__).parent / "s20-lexicon-tune.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    base = "/root/asr-work/s20/lm/lexicon-dev.tsv.gz" if "dev" in dump else "/root/asr-work/s20/lm/lexicon.tsv.gz"
    make = None
    lex = base
    if kind != "base":
        old = Counter({line.split("\t")[0]: int(line.split("\t")[1]) for line in gzip.open(base, "rt")})
        c = ss_unigrams() if kind.startswith("ss") else wf_unigrams()
        for w in old:  # every base word at least once
            c[w] = c.get(w, 0) + 1
        lex = f"lex-{kind}-{'dev' if 'dev' in dump else 'real'}.tsv.gz"
        write(c, lex)
        print(kind, len(c), "words", flush=True)
        if "bi" in kind:
            pairs, before = ss_bigrams()

            def make(u: Lexicon) -> Bigram:
                f = {x.name: getattr(u, x.name) for x in dataclasses.fields(Lexicon)}
                return Bigram(**f, pair_counts=pairs, before=before)

    tune.grid(dump, lex, settings, make=make, label=f"{kind} {Path(dump).stem} ")


if __name__ == "__main__":
    main()
