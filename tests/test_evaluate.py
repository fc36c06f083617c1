"""asr.evaluate: manifests, WER/CER against jiwer on known strings, the report's last line."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import jiwer
import numpy as np
import pytest
import soundfile as sf

from asr import evaluate as E

SR = 16_000
LAST_LINE = re.compile(r"^WER \d+\.\d{2}% CER \d+\.\d{2}% RTFx \d+\.\d$")


@pytest.fixture()
def clips(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        t = np.arange(int(SR * (1 + i))) / SR
        wave = 0.3 * np.sign(np.sin(2 * np.pi * 150 * t)) + 0.02 * rng.standard_normal(t.size)
        sf.write(tmp_path / f"u{i}.flac", wave.astype(np.float32), SR)
    (tmp_path / "m.tsv").write_text("u0.flac\tthe cat sat\nu1.flac\thello world\n", encoding="utf-8")
    return tmp_path


def test_wer_matches_jiwer_on_known_strings():
    rates = E.error_rates(["the cat sat"], ["the cat sat down"])
    assert rates.wer == pytest.approx(100 / 3)
    assert (rates.substitutions, rates.deletions, rates.insertions, rates.reference_words) == (0, 0, 1, 3)
    refs = ["the cat sat on the mat", "a b c d"]
    hyps = ["the cat sit on mat", "a b c d e"]
    rates = E.error_rates(refs, hyps)
    assert rates.wer == pytest.approx(100 * jiwer.wer(refs, hyps))
    assert rates.wer == pytest.approx(100 * 3 / 10)  # sat->sit, -the, +e over 10 words
    assert rates.cer == pytest.approx(100 * jiwer.cer(refs, hyps))
    assert E.error_rates(["abc"], ["abd"]).cer == pytest.approx(100 / 3)


def test_whisper_english_normaliser_is_applied():
    normalize = E.make_normalizer("en")
    assert E.error_rates(["Hello, World!"], ["hello world"], normalize).wer == 0
    assert E.error_rates(["It's colour."], ["it is color"], normalize).wer == 0
    assert E.error_rates(["Hello, World!"], ["hello world"]).wer == 100.0  # no normaliser: both words differ
    basic = E.make_normalizer("fr")
    assert basic("Bonjour, le Monde!").split() == ["bonjour", "le", "monde"]


def test_empty_references():
    with pytest.raises(ValueError):
        E.error_rates([""], ["x"])
    assert E.error_rates(["a b", ""], ["a b", "x"]).wer == pytest.approx(50.0)


def test_read_manifest_tsv_and_jsonl(tmp_path):
    (tmp_path / "a.flac").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.flac").write_bytes(b"x")
    (tmp_path / "m.tsv").write_text("audio\ttext\n# note\n\na.flac\tone two\nsub/b.flac\tthree\n", encoding="utf-8")
    items = E.read_manifest(tmp_path / "m.tsv")
    assert [(u.audio, u.text) for u in items] == [(tmp_path / "a.flac", "one two"), (tmp_path / "sub/b.flac", "three")]
    rows = [{"audio": "a.flac", "text": "one"}, {"audio": str(tmp_path / "sub/b.flac"), "text": "two"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert [u.text for u in E.read_manifest(tmp_path / "m.jsonl")] == ["one", "two"]
    (tmp_path / "cols.tsv").write_text(
        "file\tvoice\ttext\tseconds\na.flac\ten-us\tHello there.\t1.5\n", encoding="utf-8"
    )
    assert [(u.audio.name, u.text) for u in E.read_manifest(tmp_path / "cols.tsv")] == [("a.flac", "Hello there.")]
    (tmp_path / "bad.tsv").write_text("missing.flac\tx\n", encoding="utf-8")
    with pytest.raises(E.ManifestError, match="no such audio"):
        E.read_manifest(tmp_path / "bad.tsv")
    (tmp_path / "bad2.tsv").write_text("a.flac\tone\nno tab here\n", encoding="utf-8")
    with pytest.raises(E.ManifestError, match="TAB"):
        E.read_manifest(tmp_path / "bad2.tsv")


@dataclass
class FakePipeline:
    """Returns fixed transcripts by file name; counts calls."""

    answers: dict[str, str]
    device: str = "cpu"
    calls: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # the step count each transcribe call was given

    def transcribe(self, path, steps=16, seed=None, *, options=None, record_steps=True):  # Pipeline's signature
        self.calls.append(path)
        self.steps.append(options.steps if options is not None else steps)
        name = path.rsplit("/", 1)[-1]
        return SimpleNamespace(text=self.answers[name], timings=SimpleNamespace(audio_seconds=2.0))

    def transcribe_ctc(self, path):
        self.calls.append("ctc:" + path)
        return SimpleNamespace(text="the cat", timings=SimpleNamespace(audio_seconds=2.0))


def test_evaluate_counts_a_hand_computed_corpus(clips):
    utts = E.read_manifest(clips / "m.tsv")
    fake = FakePipeline({"u0.flac": "The cat sat down.", "u1.flac": "hello world"})
    result = E.evaluate(fake, utts, steps=8)
    assert len(fake.calls) == 3 and fake.steps == [8, 8, 8]  # one warm-up + two timed, at the steps asked for
    assert result.rates.wer == pytest.approx(20.0)  # one insertion over five reference words
    assert [u.word_errors for u in result.utterances] == [1, 0]
    assert result.audio_seconds == 4.0 and result.rtfx > 0
    assert LAST_LINE.match(result.summary())
    assert "20.00%" in result.summary()


def test_cli_last_line_with_tiny_random(clips, capsys, tmp_path):
    import torch

    threads = torch.get_num_threads()
    try:
        code = E.main(
            [
                "--manifest",
                str(clips / "m.tsv"),
                "--model",
                "tiny-random",
                "--steps",
                "1,2",
                "--seed",
                "0",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--json",
                str(tmp_path / "r.json"),
                "--ctc",
            ]  # fmt: skip
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert LAST_LINE.match(lines[-1]), lines[-1]
    assert any(line.startswith("## 1 steps") for line in lines) and any(line.startswith("## 2 steps") for line in lines)
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["steps"] for r in report["results"]] == [1, 2]
    assert report["ctc"]["steps"] == 0 and len(report["ctc"]["utterances"]) == 2
    assert "## CTC head, greedy" in lines and lines[-4].startswith("CTC head, greedy (no denoising): WER ")
    assert lines[-1] == f"WER {report['results'][-1]['wer']:.2f}% CER {report['results'][-1]['cer']:.2f}% " + (
        f"RTFx {report['results'][-1]['rtfx']:.1f}"
    )
    # where the time went: one line per configuration, from the transcripts' own stage timings
    stage_lines = [line for line in lines if line.startswith("time per utterance")]
    assert [line.split(":")[0] for line in stage_lines] == [
        "time per utterance, CTC head", "time per utterance, 1 steps", "time per utterance, 2 steps"
    ]  # fmt: skip
    assert "ctc" in stage_lines[0] and "denoise" not in stage_lines[0] and "denoise" in stage_lines[-1]
    last = report["results"][-1]
    assert {"features", "encoder+projector", "prefill", "denoise"} <= set(last["stages"])
    assert 0 < sum(last["stages"].values()) <= sum(u["processing"] for u in last["utterances"])


def test_cli_reports_a_bad_manifest(tmp_path, capsys):
    assert E.main(["--manifest", str(tmp_path / "none.tsv"), "--model", "tiny-random"]) == 2
    assert "no such manifest" in capsys.readouterr().err


def test_evaluate_ctc_uses_the_ctc_transcripts(clips):
    fake = FakePipeline({})
    result = E.evaluate(fake, E.read_manifest(clips / "m.tsv"), steps=8, ctc=True)
    assert result.steps == 0 and all(c.startswith("ctc:") for c in fake.calls)
    # "the cat" against "the cat sat" (1 deletion) and "hello world" (2 substitutions): 3 errors in 5 words
    assert result.rates.wer == pytest.approx(100 * 3 / 5)
