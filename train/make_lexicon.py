"""A word lexicon with unigram counts for a small model's lexicon reading (``asr.decoding.Lexicon``).

    python train/make_lexicon.py OUT.tsv.gz [--exclude MANIFEST ...]

Words (lower case, letters and apostrophes, as the normalised tokenizer writes them) and counts from:
- Debian's ``wamerican`` and ``wbritish`` word lists (``/usr/share/dict``; each word once), so that everyday English
  outside the training texts is spelled right too;
- ``make_data.py``'s text corpus (fortunes, WordNet examples, the King James Bible, flite's Alice), each word as
  often as it occurs, without the sentences of the ``--exclude`` manifests (the evaluation sets: their words count
  only as the word lists have them).

Writes ``word<TAB>count`` lines, most frequent first, gzip-compressed.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from collections import Counter
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests), not run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_data import excluded_sentences, load_corpus  # noqa: E402

WORD_LISTS = (Path("/usr/share/dict/american-english"), Path("/usr/share/dict/british-english"))
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words_of(text: str) -> list[str]:
    """The words of ``text`` as the normalised tokenizer would write them (lower case; letters and apostrophes)."""
    return WORD.findall(text.lower().replace("\u2019", "'"))


def count_words(exclude: list[Path], word_lists: tuple[Path, ...] = WORD_LISTS) -> Counter:
    counts: Counter = Counter()
    for path in word_lists:
        if not path.is_file():
            raise SystemExit(f"{path} is missing: apt-get install wamerican wbritish")
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            if WORD.fullmatch(line.strip().lower()):
                counts[line.strip().lower()] = 1
    corpus = load_corpus()
    excluded = excluded_sentences(corpus, exclude)
    for sentences in corpus.values():
        for sentence in sentences:
            if sentence not in excluded:
                counts.update(words_of(sentence))
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--exclude", type=Path, nargs="*", default=[], help="manifests whose sentences are left out")
    args = p.parse_args(argv)
    counts = count_words(args.exclude)
    lines = "".join(f"{w}\t{c}\n" for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(args.out, "wb", compresslevel=9, mtime=0) as f:
        f.write(lines.encode("utf-8"))
    print(f"{len(counts)} words, {sum(counts.values())} in all -> {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
