"""train/make_lexicon.py: general English's counts and word pairs, the word lists' and corpus's spellings (evaluation
sentences left out) as the normalised tokenizer writes them, and a file that asr.decoding.Lexicon reads."""

from __future__ import annotations

import gzip
from collections import Counter

import pytest
from conftest import train_script

from asr.decoding import Lexicon

ml = train_script("make_lexicon")

CORPUS = {"a": ["The cat sat.", "The dog’s bone, the end.", "'Tis 2 cats' toys."], "b": ["Held out sentence here."]}


@pytest.fixture
def sources(tmp_path, monkeypatch):
    words = tmp_path / "words"
    words.write_text("Apple\napple's\nzebra\nhyphen-ated\n")
    monkeypatch.setattr(ml, "load_corpus", lambda: CORPUS)
    evaluation = tmp_path / "eval.tsv"
    evaluation.write_text("x.flac\tHeld out sentence here.\n")
    return [evaluation], (words,)


def test_corpus_counts_without_general_english(sources):
    exclude, word_lists = sources
    counts, pairs = ml.count_words(exclude, general=False, word_lists=word_lists)
    assert counts["the"] == 3 and counts["dog's"] == 1 and counts["apple"] == 1 and counts["apple's"] == 1
    assert counts["'tis"] == 1 and counts["cats'"] == 1 and counts["2"] == 1  # as the tokenizer writes them
    assert "held" not in counts and "hyphen-ated" not in counts and "hyphen" not in counts and "Apple" not in counts
    assert not pairs


def test_general_counts_decide_and_other_spellings_count_once(sources, monkeypatch):
    exclude, word_lists = sources
    general = {
        ml.GENERAL_WORDS: Counter({"the": 1000, "cat": 100, "dog": 50}),
        ml.GENERAL_PAIRS: Counter({("the", "cat"): 7, ("the", "zzz"): 6, ("the", "dog"): 3, ("cat", "sat"): 1}),
    }
    monkeypatch.setattr(ml, "general_counts", lambda name: general[name])
    counts, pairs = ml.count_words(exclude, bigrams=2, word_lists=word_lists)
    assert counts["the"] == 1000 and counts["cat"] == 100 and counts["sat"] == 1 and counts["apple's"] == 1
    assert "held" not in counts
    assert pairs == {("the", "cat"): 7, ("the", "dog"): 3}  # the 2 most frequent pairs of lexicon words


def test_lexicon_file_reads_back(sources, monkeypatch, tmp_path):
    exclude, word_lists = sources
    monkeypatch.setattr(ml, "WORD_LISTS", word_lists)
    out = tmp_path / "lexicon.tsv.gz"
    monkeypatch.setattr(ml, "general_counts", lambda name: Counter(
        {"the": 123_456, "cat": 1_234} if name == ml.GENERAL_WORDS else {("the", "cat"): 7_777, ("cat", "the"): 12}
    ))  # fmt: skip
    assert ml.main([str(out), "--exclude", str(exclude[0]), "--bigrams", "1"]) == 0
    lines = gzip.open(out, "rt").read().splitlines()
    assert "the\t120000" in lines and "cat\t1200" in lines and lines[-1] == "the cat\t7800"  # 2 significant digits
    lexicon = Lexicon.read(out)
    assert lexicon.pairs == {"the": {"cat": 1.0}}
    assert lexicon.word_score("cat", "the") > lexicon.word_score("cat") > lexicon.word_score("zebra") > lexicon.oov


def test_general_english_comes_from_symspellpy():
    words = ml.general_counts(ml.GENERAL_WORDS)
    assert len(words) > 80_000 and words.most_common(1)[0][0] == "the"
    pairs = ml.general_counts(ml.GENERAL_PAIRS)
    assert len(pairs) > 200_000 and pairs[("of", "the")] > pairs[("the", "of")]
