"""A word lexicon with unigram and bigram counts for a small model's lexicon reading (``asr.decoding.Lexicon``).

    python train/make_lexicon.py OUT.tsv.gz [--exclude MANIFEST ...] [--bigrams N] [--no-general]

Words are spelled as the normalised tokenizer writes them (``make_tokenizer.normaliser``: lower case; letters,
digits and apostrophes). Sources:
- general English (``symspellpy``'s frequency dictionaries, MIT: 82 765 words and 243 342 word pairs with counts
  from Google Books Ngram, intersected with SCOWL): the unigram counts, and the ``--bigrams`` most frequent pairs
  of lexicon words; ``--no-general`` leaves them out (the corpus's own counts then, as before session 21);
- Debian's ``wamerican`` and ``wbritish`` word lists (``/usr/share/dict``) and the words of ``make_data.py``'s text
  corpus (fortunes, WordNet examples, the King James Bible, flite's Alice) without the sentences of the
  ``--exclude`` manifests (the evaluation sets): spellings, each counted once when general English has the counts.

Writes ``word<TAB>count`` lines, then ``word word<TAB>count`` lines, each in alphabetical order (smaller compressed);
counts rounded to two significant digits (a log-probability moves by less than 0.05), gzip-compressed.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests), not run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_data import excluded_sentences, load_corpus  # noqa: E402
from make_tokenizer import normaliser  # noqa: E402

WORD_LISTS = (Path("/usr/share/dict/american-english"), Path("/usr/share/dict/british-english"))
GENERAL_WORDS = "frequency_dictionary_en_82_765.txt"  # in the symspellpy package
GENERAL_PAIRS = "frequency_bigramdictionary_en_243_342.txt"
_normalise = normaliser().normalize_str


def words_of(text: str) -> list[str]:
    """The words of ``text`` as the normalised tokenizer writes them."""
    return _normalise(text).split()


def one_word(text: str) -> str | None:
    """``text`` as one normalised word, or None where normalising splits or empties it ("hyphen-ated")."""
    words = words_of(text)
    return words[0] if len(words) == 1 else None


def general_counts(name: str) -> Counter:
    """A symspellpy frequency dictionary (``word count`` or ``word word count`` lines): counts by word or pair."""
    counts: Counter = Counter()
    with resources.files("symspellpy").joinpath(name).open(encoding="utf-8") as f:
        for line in f:
            *words, count = line.split()
            spelled = tuple(one_word(w) for w in words)
            if None not in spelled:
                counts[spelled if len(spelled) > 1 else spelled[0]] += int(count)
    return counts


def spellings(exclude: list[Path], word_lists: tuple[Path, ...] | None = None) -> tuple[set[str], Counter]:
    """The word lists' words (default ``WORD_LISTS``, read when called), and the corpus's word counts without the
    ``exclude`` manifests' sentences."""
    listed: set[str] = set()
    for path in WORD_LISTS if word_lists is None else word_lists:
        if not path.is_file():
            raise SystemExit(f"{path} is missing: apt-get install wamerican wbritish")
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            if (word := one_word(line)) is not None:
                listed.add(word)
    corpus = load_corpus()
    excluded = excluded_sentences(corpus, exclude)
    counts: Counter = Counter()
    for sentences in corpus.values():
        for sentence in sentences:
            if sentence not in excluded:
                counts.update(words_of(sentence))
    return listed, counts


def count_words(
    exclude: list[Path], general: bool = True, bigrams: int = 0, word_lists: tuple[Path, ...] | None = None
) -> tuple[Counter, Counter]:
    """(word counts, word-pair counts): general English's counts (``general``) plus every other spelling once, or
    the word lists once each and the corpus's counts; the ``bigrams`` most frequent general pairs of lexicon words."""
    listed, corpus = spellings(exclude, word_lists)
    if not general:
        return Counter(dict.fromkeys(listed, 1)) + corpus, Counter()
    counts = general_counts(GENERAL_WORDS)
    for word in listed | set(corpus):
        counts[word] = counts.get(word, 0) or 1
    pairs = Counter()
    if bigrams:
        known = (kv for kv in general_counts(GENERAL_PAIRS).most_common() if all(w in counts for w in kv[0]))
        pairs = Counter(dict(kv for kv, _ in zip(known, range(bigrams), strict=False)))
    return counts, pairs


def significant(count: int, digits: int = 2) -> int:
    """``count`` rounded to ``digits`` significant digits."""
    scale = 10 ** max(len(str(count)) - digits, 0)
    return max(1, round(count / scale)) * scale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--exclude", type=Path, nargs="*", default=[], help="manifests whose sentences are left out")
    p.add_argument("--bigrams", type=int, default=19000, help="the most frequent general word pairs kept (0: none; "
                   "19 000: mini's; more did not help, train/results/cpu-x4 section 17)")  # fmt: skip
    p.add_argument("--no-general", dest="general", action="store_false", help="no general-English counts or pairs")
    args = p.parse_args(argv)
    counts, pairs = count_words(args.exclude, args.general, args.bigrams if args.general else 0)
    rows = [(w, significant(c)) for w, c in counts.items()] + [(" ".join(k), significant(c)) for k, c in pairs.items()]
    lines = "".join(f"{k}\t{c}\n" for k, c in sorted(rows, key=lambda kc: (" " in kc[0], kc[0])))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(args.out, "wb", compresslevel=9, mtime=0) as f:
        f.write(lines.encode("utf-8"))
    print(f"{len(counts)} words, {len(pairs)} word pairs -> {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
