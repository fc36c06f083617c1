"""Session 20's probe (section 15): asr.decoding.lexicon_search with a bigram word model in place of the unigram
(bigram counts of make_data.py's corpus without the EXCLUDE manifests' sentences, absolute discounting 0.75
interpolated with the lexicon's unigram), on s20-lexicon-tune.py's dumps; prints WER per ALPHA,BETA,OOV.

    python s20-bigram-probe.py DUMP.pkl LEXICON EXCLUDE1,EXCLUDE2,... ALPHA,BETA,OOV ...
"""

import dataclasses
import importlib.util
import math
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "train")]
import make_data  # noqa: E402

from asr.decoding import Lexicon  # noqa: E402

DISCOUNT = 0.75
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")  # session 20's make_lexicon.words_of (the lexicon it was run with)


def words_of(text: str) -> list[str]:
    return WORD.findall(text.lower().replace("\u2019", "'"))


@dataclasses.dataclass(frozen=True)
class BigramLexicon(Lexicon):
    # (previous, word) -> count; not Lexicon.pairs (session 21's pair shares, interpolated another way)
    pair_counts: dict = dataclasses.field(default_factory=dict)
    before: dict = dataclasses.field(default_factory=dict)  # previous -> count of pairs
    kinds: dict = dataclasses.field(default_factory=dict)  # previous -> number of distinct words after it

    def word_score(self, word: str, previous: str = "") -> float:
        if word not in self.log_probs:
            return self.oov
        unigram = math.exp(self.log_probs[word])
        n = self.before.get(previous or "<s>", 0)
        if not n:
            return self.alpha * math.log(unigram)
        key = previous or "<s>"
        p = max(self.pair_counts.get((key, word), 0) - DISCOUNT, 0) / n + DISCOUNT * self.kinds[key] / n * unigram
        return self.alpha * math.log(p)


def bigram_counts(exclude: list[Path]) -> tuple[Counter, Counter, Counter]:
    corpus = make_data.load_corpus()
    excluded = make_data.excluded_sentences(corpus, exclude)
    pairs, before = Counter(), Counter()
    for sentences in corpus.values():
        for sentence in sentences:
            if sentence not in excluded:
                words = ["<s>", *words_of(sentence)]
                pairs.update(zip(words, words[1:], strict=False))
                before.update(words[:-1])
    return pairs, before, Counter(a for a, _ in pairs)


def main() -> None:
    dumped, lexicon_file, exclude, settings = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
    pairs, before, kinds = bigram_counts([Path(e) for e in exclude])
    spec = importlib.util.spec_from_file_location("tune", Path(__file__).parent / "s20-lexicon-tune.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)

    def make(unigram: Lexicon) -> BigramLexicon:
        fields = {f.name: getattr(unigram, f.name) for f in dataclasses.fields(Lexicon)}
        return BigramLexicon(**fields, pair_counts=pairs, before=before, kinds=kinds)

    tune.grid(dumped, lexicon_file, settings, make=make, label="bigram ")


if __name__ == "__main__":
    main()
