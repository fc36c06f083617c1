"""A small byte-level BPE tokenizer for the small model, trained on the training text.

    python train/make_tokenizer.py --out asr/mini/tokenizer [--vocab 2048] [--manifest data/train.tsv ...] [--normalise]

Ids 0-3 are ``<pad> <eos> <bos> <unk>`` and the chat/audio markers ``<|turn> <turn|> <|audio> <|audio|> <audio|>``
follow, as in :func:`asr.loading.byte_tokenizer`; the 256 byte symbols are always in the vocabulary, so any text
can be encoded. Text: the manifests' transcripts, plus the sentence corpus of ``train/make_data.py`` unless
``--no-corpus``.

``--normalise``: the tokenizer lower-cases text and keeps only letters a-z, digits, apostrophes and single spaces
(``NORMALISE``; its own normaliser, so encoding any text applies it): a model trained with it writes transcripts
without case or punctuation, and its pieces do not spend the vocabulary on ``The``/`` the``/``the,`` variants.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
MARKERS = ["<|turn>", "<turn|>", "<|audio>", "<|audio|>", "<audio|>"]


# --normalise: characters kept (anything else becomes a space), after lower-casing and unifying apostrophes
NORMALISE = "[^a-z0-9' ]+"


def normaliser():
    """The ``--normalise`` tokenizer's text normaliser (a ``tokenizers`` normaliser, saved in tokenizer.json)."""
    from tokenizers import Regex, normalizers

    return normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.Lowercase(),
        normalizers.Replace("\u2019", "'"),
        normalizers.Replace(Regex(NORMALISE), " "),
        normalizers.Replace(Regex(" {2,}"), " "),
        normalizers.Strip(),
    ])  # fmt: skip


def train_tokenizer(texts: list[str], vocab_size: int = 2048, normalise: bool = False):
    """A ``PreTrainedTokenizerFast`` (byte-level BPE, GPT-2 style word splitting) trained on ``texts``;
    ``normalise``: with :func:`normaliser` (lower case, letters, digits and apostrophes only)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    if normalise:
        core.normalizer = normaliser()
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS + MARKERS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    tok.add_special_tokens({"additional_special_tokens": MARKERS})
    return tok


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--manifest", type=Path, action="append", default=[], help="TSV/JSONL manifests (repeatable)")
    p.add_argument("--no-corpus", action="store_true", help="only the manifests' transcripts")
    p.add_argument("--normalise", action="store_true", help="lower case, letters, digits and apostrophes only")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from asr.evaluate import read_manifest

    texts = [u.text for m in args.manifest for u in read_manifest(m, check_files=False)]
    if not args.no_corpus:
        sys.path.insert(0, str(Path(__file__).parent))
        from make_data import load_corpus

        texts += [s for sentences in load_corpus().values() for s in sentences]
    tok = train_tokenizer(texts, args.vocab, normalise=args.normalise)
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIALS + MARKERS]
    assert ids == list(range(len(ids))), ids
    tok.save_pretrained(args.out)
    words = sum(len(t.split()) for t in texts)
    tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
    print(f"{len(tok)} tokens; {len(texts)} texts, {tokens / max(1, words):.2f} tokens per word -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
