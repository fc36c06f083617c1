"""train/make_lexicon.py: the word lists once each, the corpus's words as often as they occur, evaluation sentences
left out, and a file that asr.decoding.Lexicon reads."""

from __future__ import annotations

from conftest import train_script

from asr.decoding import Lexicon

ml = train_script("make_lexicon")


def test_lexicon_counts_corpus_words_without_the_evaluation_sentences(tmp_path, monkeypatch):
    words = tmp_path / "words"
    words.write_text("Apple\napple's\nzebra\nhyphen-ated\n")
    corpus = {"a": ["The cat sat.", "The dog’s bone, the end."], "b": ["Held out sentence here."]}
    monkeypatch.setattr(ml, "load_corpus", lambda: corpus)
    evaluation = tmp_path / "eval.tsv"
    evaluation.write_text("x.flac\tHeld out sentence here.\n")
    counts = ml.count_words([evaluation], word_lists=(words,))
    assert counts["the"] == 3 and counts["dog's"] == 1 and counts["apple"] == 1 and counts["apple's"] == 1
    assert "held" not in counts and "hyphen-ated" not in counts and "Apple" not in counts
    monkeypatch.setattr(ml, "count_words", lambda exclude: counts)
    assert ml.main([str(tmp_path / "lexicon.tsv.gz")]) == 0
    lexicon = Lexicon.read(tmp_path / "lexicon.tsv.gz")
    assert set(lexicon.words) == set(counts) and lexicon.words[0] == "apple"
    assert lexicon.word_score("the") > lexicon.word_score("cat") > lexicon.oov
