"""The shipped small model (asr/mini): its size, that it loads and transcribes, and the CLI's fallback to it."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import same_threads_env

import asr
from asr.evaluate import evaluate, read_manifest
from asr.loading import MINI_DIR

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "manifest.tsv"
pytestmark = pytest.mark.skipif(not (MINI_DIR / "speech.json").is_file(), reason="asr/mini/model is not shipped")


def test_mini_is_at_most_40_mb_with_its_encoder():
    files = [f for d in (MINI_DIR, MINI_DIR.parent / "whisper-tiny-en") for f in d.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 40e6


def test_mini_transcribes_the_examples():
    """Real weights, real transcripts: the examples (espeak-ng voices, which the model never trained on) at 8 steps
    come out with most words right or close; random weights score 100 % or more."""
    pipe = asr.load("mini", device="cpu")
    assert pipe.is_small and not pipe.is_random and pipe.model.canvas == "aligned"
    result = evaluate(pipe, read_manifest(EXAMPLES), 8, seed=0, warmup=False)
    assert result.rates.wer < 90.0 and result.rates.cer < 60.0, result.rates
    assert all(r.hypothesis.strip() for r in result.utterances)


def test_mini_on_the_cpu_draws_by_cdf_unless_asked_for_the_exact_draw():
    """asr.load picks the cheap draw for a small model on the CPU; the transcript says which draw made it, and
    DenoiseOptions(draw="exact") still gets generate()'s draw; the tiny random stack keeps the exact draw."""
    from asr.decoding import DenoiseOptions

    pipe = asr.load("mini", device="cpu")
    clip = ROOT / "examples" / "quick_brown_fox.flac"
    cheap = pipe.transcribe(clip, steps=4, seed=0)
    exact = pipe.transcribe(clip, seed=0, options=DenoiseOptions(steps=4, draw="exact"))
    assert pipe.draw == "cdf" and (cheap.draw, exact.draw) == ("cdf", "exact")
    assert cheap.to_dict(steps=False)["draw"] == "cdf" and cheap.text and exact.text
    steps = [t.sampled for t in cheap.segments[0].steps], [t.sampled for t in exact.segments[0].steps]
    assert not all(np.array_equal(a, b) for a, b in zip(*steps, strict=True))  # other random numbers
    assert asr.load("tiny-random", device="cpu").draw == "exact"


def test_mini_starts_from_its_ctc_reading_when_asked(capsys):
    """DenoiseOptions(start="ctc"): the first canvas is the CTC head's reading laid out as the aligned canvas, so
    it reads as transcribe_ctc's text; the denoiser then refines it, and the packed tiny model refuses the option.
    The CLI's --start ctc gives the same transcript, and a clear error for a packed model."""
    from asr.cli import main
    from asr.decoding import DenoiseOptions, ctc_collapse

    pipe = asr.load("mini", device="cpu")
    clip = str(read_manifest(EXAMPLES)[0].audio)
    ctc = pipe.transcribe_ctc(clip)
    got = pipe.transcribe(clip, seed=0, options=DenoiseOptions(steps=2, start="ctc"))
    first = got.segments[0].steps.canvas[0].tolist()
    assert pipe.decode(first) == ctc.segments[0].text and ctc_collapse(first, pipe.model.prompt.pad_id)
    assert got.text.strip()
    tiny = asr.load("tiny-random", device="cpu")
    with pytest.raises(ValueError, match="aligned canvas"):
        tiny.transcribe(clip, seed=0, options=DenoiseOptions(steps=1, start="ctc"))
    capsys.readouterr()
    assert main([clip, "--model", "mini", "--start", "ctc", "--steps", "2", "--seed", "0", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == got.text.strip()
    assert main([clip, "--model", "tiny-random", "--start", "ctc", "--device", "cpu"]) == 2
    assert "--start ctc needs a model with an aligned canvas" in capsys.readouterr().err


def test_mini_reads_its_final_canvas_jointly_with_the_ctc_head(capsys):
    """DenoiseOptions(ctc_weight): weight 0 is the denoiser's own last argmax; a huge weight leaves the CTC head
    alone, so the text read position by position (lexicon=False) is transcribe_ctc's; mini's default (speech.json:
    2) is the joint reading, in the API and the CLI, and its record keeps the canvas the text was read from. The
    packed tiny model refuses a weight."""
    from asr.cli import main
    from asr.decoding import DenoiseOptions

    pipe = asr.load("mini", device="cpu")
    assert pipe.model.ctc_weight == 2.0
    clip = str(read_manifest(EXAMPLES)[1].audio)
    plain = pipe.transcribe(clip, seed=0, options=DenoiseOptions(steps=4, ctc_weight=0.0))
    last = plain.segments[0].steps.argmax[-1].tolist()
    assert plain.text == pipe.decode(last) and plain.segments[0].final_canvas is None and plain.ctc_weight == 0
    head = pipe.transcribe(clip, seed=0, options=DenoiseOptions(steps=4, ctc_weight=1e6, lexicon=False))
    assert head.text == pipe.transcribe_ctc(clip).text and head.text != plain.text
    assert len(head.segments[0].steps) == 4  # the denoising and its record are unchanged
    joint = pipe.transcribe(clip, seed=0, options=DenoiseOptions(steps=4, ctc_weight=2.0))
    default = pipe.transcribe(clip, steps=4, seed=0)
    assert default.text == joint.text and default.ctc_weight == 2.0
    final = default.segments[0].final_canvas
    assert final is not None and len(final) == len(last) and pipe.decode(final) == default.text
    record = default.to_dict()
    assert record["ctc_weight"] == 2.0 and record["segments"][0]["final_canvas"] == final
    assert "final_canvas" not in default.to_dict(steps=False)["segments"][0]
    capsys.readouterr()
    argv = [clip, "--model", "mini", "--steps", "4", "--seed", "0", "--device", "cpu"]
    assert main(argv) == 0 and capsys.readouterr().out.strip() == joint.text.strip()
    assert main([*argv, "--ctc-weight", "0"]) == 0 and capsys.readouterr().out.strip() == plain.text.strip()
    tiny = asr.load("tiny-random", device="cpu")
    assert tiny.model.ctc_weight == 0 and tiny.transcribe(clip, steps=1, seed=0).ctc_weight == 0
    with pytest.raises(ValueError, match="aligned canvas"):
        tiny.transcribe(clip, seed=0, options=DenoiseOptions(steps=1, ctc_weight=2.0))
    assert main([clip, "--model", "tiny-random", "--ctc-weight", "2", "--device", "cpu"]) == 2
    assert "--ctc-weight needs a model with an aligned canvas" in capsys.readouterr().err


def test_mini_spells_its_joint_reading_from_its_lexicon(capsys, tmp_path):
    """mini ships a word lexicon (speech.json) that its joint reading spells words from by default: on the example
    clips (espeak voices it never trained on) that reading gets no more words wrong than the position-by-position
    one, its words come from the lexicon, its final canvas reads back as its text, and the record says so.
    lexicon=False (the CLI's --no-lexicon) gives the position-by-position reading; the option is refused without a
    joint reading or a lexicon, and a lexicon file outside the model folder is refused at load."""
    from asr.cli import main
    from asr.decoding import DenoiseOptions
    from asr.loading import ModelLoadError, load_small_model

    pipe = asr.load("mini", device="cpu")
    lexicon = pipe.model.lexicon
    assert lexicon is not None and len(lexicon.words) > 50_000
    clips = read_manifest(EXAMPLES)
    spelled = evaluate(pipe, clips, 8, seed=0, warmup=False)
    plain = evaluate(pipe, clips, 8, seed=0, warmup=False, lexicon=False)
    assert spelled.rates.word_errors <= plain.rates.word_errors, (spelled.rates, plain.rates)
    assert [u.hypothesis for u in spelled.utterances] != [u.hypothesis for u in plain.utterances]
    clip = str(clips[0].audio)
    t = pipe.transcribe(clip, steps=8, seed=0)
    assert t.lexicon and t.to_dict()["lexicon"] is True and t.text
    assert all(word in lexicon.log_probs for word in t.text.split()), t.text
    segment = t.segments[0]
    assert pipe.decode(segment.final_canvas) == segment.text and segment.words
    assert [w.word for w in segment.words] == segment.text.split()
    off = pipe.transcribe(clip, seed=0, options=DenoiseOptions(steps=8, lexicon=False))
    assert not off.lexicon and off.text == plain.utterances[0].hypothesis
    with pytest.raises(ValueError, match="lexicon"):
        pipe.transcribe(clip, seed=0, options=DenoiseOptions(steps=1, ctc_weight=0.0, lexicon=True))
    with pytest.raises(ValueError, match="lexicon"):
        asr.load("tiny-random", device="cpu").transcribe(clip, seed=0, options=DenoiseOptions(steps=1, lexicon=True))
    capsys.readouterr()
    argv = [clip, "--model", "mini", "--steps", "8", "--seed", "0", "--device", "cpu"]
    assert main([*argv, "--no-lexicon"]) == 0 and capsys.readouterr().out.strip() == off.text
    moved = shutil.copytree(MINI_DIR, tmp_path / "model")
    info = json.loads((moved / "speech.json").read_text())
    info["whisper"] = str(MINI_DIR.parent / "whisper-tiny-en")
    info["lexicon"]["file"] = "../lexicon.tsv.gz"
    (moved / "speech.json").write_text(json.dumps(info))
    with pytest.raises(ModelLoadError, match="lexicon"):
        load_small_model(moved)


@pytest.mark.parametrize("reading", ["denoise", "ctc"])
def test_mini_word_timestamps_follow_the_speech(reading):
    """Two example clips with 1.5 s of silence between them: every word lies inside the speech of one clip (the
    splitter's own voiced spans of each clip give the truth), in order, and each clip gets its words."""
    from asr import audio as A

    a, b = (A.load_audio(ROOT / "examples" / name) for name in ("quick_brown_fox.flac", "meeting_time.flac"))
    gap = 1.5
    offset = (len(a) / A.SAMPLE_RATE) + gap
    wave = np.concatenate([a, np.zeros(int(gap * A.SAMPLE_RATE), np.float32), b])
    (a_span,), (b_span,) = A.split_on_silence(a), A.split_on_silence(b)
    pipe = asr.load("mini", device="cpu")
    t = pipe.transcribe(wave, steps=8, seed=0) if reading == "denoise" else pipe.transcribe_ctc(wave)
    words = [w for s in t.segments for w in s.words]
    assert [w.word for w in words] == t.text.split()
    slack = 0.2  # the slot (0.16 s) a token is emitted in, and the splitter's padding
    first = [w for w in words if w.end <= a_span.end + slack]
    second = [w for w in words if w.start >= offset + b_span.start - slack]
    assert len(first) >= 4 and len(second) >= 6 and len(first) + len(second) == len(words), words
    assert first[0].start <= a_span.start + 0.5 and second[0].start <= offset + b_span.start + 0.5
    assert all(w.start < w.end for w in words)
    assert all(x.end <= y.start for x, y in itertools.pairwise(words))
    assert t.to_dict(steps=False)["segments"][0]["words"][0] == words[0].to_dict()


def test_cli_falls_back_to_mini_when_the_default_model_cannot_load():
    """No --model, no GPU: the real model is refused at once and the CLI says so and uses mini; a model named with
    --model is never swapped."""
    clip = ROOT / "examples" / "quick_brown_fox.flac"
    env = same_threads_env(HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, "-m", "asr", str(clip), "--steps", "4", "--seed", "3"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "using mini, the small model trained by this project" in run.stderr
    expected = asr.load("mini", device="cpu").transcribe(clip, steps=4, seed=3)
    assert run.stdout.strip() == expected.text.strip() and expected.text.strip()
    named = subprocess.run([sys.executable, "-m", "asr", str(clip), "--model", asr.DEFAULT_MODEL],
                           capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)  # fmt: skip
    assert named.returncode == 2 and "using mini" not in named.stderr


def _ship_mini():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_mini", ROOT / "train" / "ship_mini.py")
    ship_mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship_mini)
    return ship_mini


def test_ship_mini_sets_the_models_joint_reading(tmp_path, monkeypatch):
    """ship_mini --ctc-weight writes the model's default reading into the shipped speech.json (shipped into a
    temporary folder here, from the shipped model itself); without it the source's setting is kept, its lexicon too;
    --lexicon ships another word list (with word pairs here) with its weights."""
    from asr.loading import load_small_model

    ship_mini = _ship_mini()
    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / ship_mini.WHISPER).symlink_to(MINI_DIR.parent / ship_mini.WHISPER)
    monkeypatch.setattr(ship_mini, "MINI", tmp_path / "mini")
    assert load_small_model(ship_mini.ship(MINI_DIR, {}, ctc_weight=1.5))[0].ctc_weight == 1.5
    speech = load_small_model(ship_mini.ship(MINI_DIR, {}))[0]
    assert speech.ctc_weight == 2.0 and speech.lexicon == load_small_model(MINI_DIR)[0].lexicon  # mini's own
    (tmp_path / "words.tsv").write_text("hello\t2\nworld\t1\nhello world\t5\n")
    out = ship_mini.ship(MINI_DIR, {}, lexicon=tmp_path / "words.tsv", lexicon_weights=(1.0, 2.0, -3.0, 0.5))
    lexicon = load_small_model(out)[0].lexicon
    assert lexicon.words == ("hello", "world") and lexicon.pairs == {"hello": {"world": 1.0}}
    assert (lexicon.alpha, lexicon.beta, lexicon.oov, lexicon.unigram_weight) == (1.0, 2.0, -3.0, 0.5)
    assert (
        json.loads((out / "SHIPPED.json").read_text())["source"]
        == json.loads((MINI_DIR / "SHIPPED.json").read_text())["source"]
    )  # shipping the shipped model again keeps where it came from


def test_ship_mini_int8_halves_the_weights_and_keeps_the_transcripts(tmp_path):
    """ship_mini --int8 (here into --out folders) writes the backbone's and the projector's weights as int8 files
    only (no float16 file for from_pretrained to misread); they load back within half an int8 step of mini's (per
    tensor, at most 1/254 of its largest magnitude), the examples' WER at 8 steps stays within 3 points of mini's,
    and shipping the int8 model again copies its files byte for byte; SHIPPED.json keeps naming the export both were
    made from. The source is mini as a float16 export (mini itself ships int8), so the quantization runs."""
    from safetensors.torch import save_file

    from asr.loading import INT8_FILE, load_small_model, read_weights

    src = tmp_path / "fp16"
    shutil.copytree(MINI_DIR, src)
    for int8 in (src / "backbone" / f"model{INT8_FILE}", src / f"projector{INT8_FILE}"):
        if int8.is_file():
            weights = {k: v.half() if v.is_floating_point() else v for k, v in read_weights(int8).items()}
            save_file(weights, int8.with_name(int8.name.replace(INT8_FILE, ".safetensors")), {"format": "pt"})
            int8.unlink()
    assert not list(src.rglob(f"*{INT8_FILE}"))
    ship_mini = _ship_mini()
    out = ship_mini.ship(src, {}, int8=True, out=tmp_path / "int8")
    files = {str(f.relative_to(out)) for f in out.rglob("*.safetensors")}
    assert out == tmp_path / "int8" and files == {f"backbone/model{INT8_FILE}", f"projector{INT8_FILE}"}
    want, got = (load_small_model(m)[0].state_dict() for m in (src, out))
    assert set(want) == set(got)
    for name, tensor in want.items():
        if tensor.is_floating_point():
            assert (got[name] - tensor).abs().max() <= tensor.abs().max() / 254 * 1.001 + 1e-8, name
    rates = [evaluate(asr.load(str(m), device="cpu"), read_manifest(EXAMPLES), 8, seed=0, warmup=False).rates
             for m in (src, out)]  # fmt: skip
    assert abs(rates[0].wer - rates[1].wer) <= 3.0, rates
    again = ship_mini.ship(out, {}, int8=True, out=tmp_path / "again")
    assert {f: (again / f).read_bytes() for f in files} == {f: (out / f).read_bytes() for f in files}
    made_from = [{k: json.loads((m / "SHIPPED.json").read_text())[k] for k in ("source", "backbone_sha256")}
                 for m in (MINI_DIR, out, again)]  # fmt: skip
    assert made_from[0] == made_from[1] == made_from[2]  # the trained export's name and backbone digest stay


def test_ship_mini_names_a_new_export_and_its_backbone(tmp_path):
    """A trained export (no SHIPPED.json) ships with its folder's name and the SHA-256 of its backbone file."""
    ship_mini = _ship_mini()
    src = tmp_path / "jointX" / "model"
    shutil.copytree(MINI_DIR, src, ignore=shutil.ignore_patterns("SHIPPED.json"))
    out = ship_mini.ship(src, {}, out=tmp_path / "shipped")
    backbone = next((src / "backbone").glob("model*.safetensors"))
    assert json.loads((out / "SHIPPED.json").read_text()) == {
        "source": "jointX/model", "backbone_sha256": hashlib.sha256(backbone.read_bytes()).hexdigest(), "evaluation": {}
    }  # fmt: skip


def test_ship_mini_reads_every_summary_line_of_an_evaluation(tmp_path):
    """ship_mini records the CTC head's and every step count's WER line, also from ``asr.evaluate --quiet`` output,
    which prints the last step count's summary only as its final two lines."""
    ship_mini = _ship_mini()
    out = tmp_path / "eval.txt"
    run = subprocess.run([sys.executable, "-m", "asr.evaluate", "--manifest", str(EXAMPLES), "--model", "mini",
                          "--steps", "1,2", "--ctc", "--quiet", "--limit", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    out.write_text(run.stdout)
    lines = ship_mini.wer_lines(out)
    assert [line.split(":")[0] for line in lines] == ["CTC head, greedy (no denoising)", "1 steps", "2 steps"]
    assert all(" WER " in line and "RTFx" in line for line in lines)
