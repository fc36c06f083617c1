"""Session 20's probe (section 15): how many of mini's errors would a word lexicon fix? Each hypothesis word of 3+
letters that is not in the lexicon (Debian wamerican + wbritish, optionally + the words of make_data.py's corpus) is
replaced by its nearest lexicon word (Levenshtein) when at most max(1, frac x its length) edits away; the transcripts
of `python -m asr.evaluate ... --json F` are scored before and after with asr.evaluate's own normaliser and counts.

    apt-get install wamerican wbritish; python s20-lexicon-probe.py real.json kokoro.json
"""

import json
import re
import sys
from pathlib import Path

from rapidfuzz import distance, process

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "train")]
from asr.evaluate import error_rates, make_normalizer  # noqa: E402


def lexicon(extra_corpus: bool) -> set[str]:
    words = set()
    for f in ("/usr/share/dict/american-english", "/usr/share/dict/british-english"):
        for w in open(f, encoding="utf-8", errors="ignore"):
            w = w.strip().lower()
            if re.fullmatch(r"[a-z']+", w):
                words.add(w)
    if extra_corpus:
        import make_data

        for sents in make_data.load_corpus().values():
            for s in sents:
                words.update(re.findall(r"[a-z']+", s.lower()))
    return words


def fix(text, lex, lexlist, maxfrac):
    out = []
    for w in text.split():
        if w in lex or len(w) < 3:
            out.append(w)
            continue
        best = process.extractOne(w, lexlist, scorer=distance.Levenshtein.distance)
        if best and best[1] <= max(1, int(len(w) * maxfrac)):
            out.append(best[0])
        else:
            out.append(w)
    return " ".join(out)


norm = make_normalizer("en")
for path in sys.argv[1:]:
    d = json.load(open(path))
    runs = d["results"] + ([d["ctc"]] if isinstance(d.get("ctc"), dict) else [])
    for r in runs if isinstance(runs, list) else [runs]:
        utts = r["utterances"]
        refs = [u["reference"] for u in utts]
        hyps = [u["hypothesis"] for u in utts]
        base = error_rates(refs, hyps, norm)
        print(path, r.get("steps"), "base", f"{base.wer:.2f}")
        for extra in (False, True):
            lex = lexicon(extra)
            lexlist = sorted(lex)
            for frac in (0.2, 0.34):
                fixed = [fix(h, lex, lexlist, frac) for h in hyps]
                e = error_rates(refs, fixed, norm)
                print(f"   lexicon {len(lex)} corpus={extra} frac={frac}: WER {e.wer:.2f}")
