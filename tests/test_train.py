"""The training recipe on the tiny stack: finite losses, the loss falls, resume is exact, exports load."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import asr
from asr import model as M
from asr import train as T
from asr.decoding import ctc_alignment

SR = 16_000
TEXTS = ["the cat sat", "a dog ran", "hello there", "one more"]


def _clip(seconds: float, seed: int) -> np.ndarray:
    """A distinct buzz per clip (pitch and syllable rate depend on the seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    buzz = np.sign(np.sin(2 * np.pi * (110 + 40 * seed) * t)) * 0.3 + 0.03 * rng.standard_normal(t.size)
    return (buzz * (0.6 + 0.4 * np.sin(2 * np.pi * (3 + seed) * t) ** 2)).astype(np.float32)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    lines = []
    for i, text in enumerate(TEXTS):
        sf.write(root / f"c{i}.flac", _clip(1.0 + 0.25 * i, i), SR)
        lines.append(f"c{i}.flac\t{text}\n")
    (root / "train.tsv").write_text("".join(lines), encoding="utf-8")
    return root / "train.tsv"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _setup(manifest, tmp_path, **overrides):
    cfg = T.TrainConfig(manifest=str(manifest), out=str(tmp_path / "run"), model="tiny-random", **overrides)
    speech, tokenizer, features = T.build_model(cfg)
    params = T.trainable_parameters(speech, cfg.train)
    examples, dropped = T.prepare_examples(T.read_manifest(manifest), tokenizer, speech.canvas_length)
    assert dropped == 0 and len(examples) == len(TEXTS)
    cache = T.FrameCache(tmp_path / "frames", speech, features)
    assert cache.ensure(examples + examples[:2], progress=False) == len(examples)  # a repeated clip: computed once
    batch = T.make_batch(examples, speech.prompt, speech.canvas_length)
    return cfg, speech, params, cache.load(examples), batch


def test_batch_targets_match_inference_canvas(manifest, tmp_path):
    cfg, speech, _, _, batch = _setup(manifest, tmp_path)
    eos, pad = speech.prompt.eos_ids[0], speech.prompt.pad_id
    ids = speech_ids = batch.canvas[0].tolist()
    n = len("the cat sat")  # byte tokenizer: one id per character
    assert ids[n] == eos and all(t == pad for t in ids[n + 1 :]) and len(ids) == speech.canvas_length
    assert batch.ar_target[0, n].item() == eos and batch.ar_target[0, n + 1 :].eq(-100).all()
    assert batch.target_lengths.tolist() == [len(t) for t in TEXTS]
    assert pad not in batch.ctc_targets.tolist() and speech_ids[:n] == batch.ar_input[0, :n].tolist()


def test_losses_finite_and_reach_trainable_parameters(manifest, tmp_path):
    cfg, speech, params, frames, batch = _setup(manifest, tmp_path, self_conditioning=1.0)
    losses = T.compute_losses(speech, frames, batch, cfg, torch.Generator().manual_seed(0))
    assert set(losses) == {"total", "diffusion", "ar", "ctc", "diffusion_text"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    losses["total"].backward()
    assert all(p.grad is not None for n, p in params.items() if n.startswith("projector."))
    lora = [p for n, p in params.items() if ".lora_B" in n]
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert not any(p.requires_grad for p in speech.whisper.parameters())
    assert not any(p.requires_grad for n, p in speech.backbone.named_parameters() if ".lora_" not in n)


def test_each_loss_reaches_the_projector(manifest, tmp_path):
    cfg, speech, params, frames, batch = _setup(manifest, tmp_path)
    for name in ("diffusion", "ar", "ctc"):
        speech.zero_grad(set_to_none=True)
        T.compute_losses(speech, frames, batch, cfg, torch.Generator().manual_seed(1))[name].backward()
        grad = speech.projector.layers[0].weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_ctc_only_skips_the_backbone_and_gives_the_same_ctc(manifest, tmp_path):
    cfg, speech, params, frames, batch = _setup(manifest, tmp_path)
    full = T.compute_losses(speech, frames, batch, cfg, torch.Generator().manual_seed(3))
    calls = []
    hook = speech.backbone.register_forward_pre_hook(lambda module, args: calls.append(1))
    only = dataclasses.replace(cfg, w_diffusion=0.0, w_ar=0.0, w_ctc=2.0)
    losses = T.compute_losses(speech, frames, batch, only, torch.Generator().manual_seed(3))
    hook.remove()
    assert calls == [] and set(losses) == {"total", "ctc"}
    assert torch.allclose(losses["ctc"], full["ctc"]) and torch.allclose(losses["total"], 2 * full["ctc"])
    losses["total"].backward()
    assert speech.projector.layers[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in params.items() if not n.startswith("projector."))


def test_ctc_train_head_lets_the_ctc_loss_train_the_tied_embeddings(manifest, tmp_path):
    cfg, speech, params, frames, batch = _setup(manifest, tmp_path, train="all", w_diffusion=0.0, w_ar=0.0)
    head = speech.backbone.lm_head.weight
    T.compute_losses(speech, frames, batch, cfg, torch.Generator().manual_seed(4))["ctc"].backward()
    assert head.grad is None  # the published recipe: the head is read frozen
    trained = dataclasses.replace(cfg, ctc_train_head=True)
    T.compute_losses(speech, frames, batch, trained, torch.Generator().manual_seed(4))["ctc"].backward()
    # the tied embedding rows of the transcripts' ids and of the blank get gradient
    used = set(batch.ctc_targets.tolist()) | {speech.prompt.pad_id}
    assert head.grad is not None and all(head.grad[i].abs().sum() > 0 for i in used)
    assert head is speech.backbone.get_input_embeddings().weight
    with pytest.raises(ValueError, match="--ctc-train-head needs --train all"):
        T.build_model(dataclasses.replace(cfg, train="projector+lora", ctc_train_head=True))


def test_total_loss_falls_on_a_fixed_batch(manifest, tmp_path):
    cfg, speech, params, frames, batch = _setup(manifest, tmp_path)
    optimizer = torch.optim.AdamW(params.values(), lr=3e-3)

    def measure() -> dict[str, float]:
        with torch.no_grad():
            out = [T.compute_losses(speech, frames, batch, cfg, torch.Generator().manual_seed(s)) for s in (7, 8)]
        return {k: sum(float(o[k]) for o in out) / len(out) for k in out[0]}

    before = measure()
    generator = torch.Generator().manual_seed(0)
    for _ in range(25):
        optimizer.zero_grad()
        T.compute_losses(speech, frames, batch, cfg, generator)["total"].backward()
        optimizer.step()
    after = measure()
    assert after["total"] < 0.8 * before["total"], (before, after)
    for name in ("diffusion", "ar", "ctc"):
        assert after[name] < before[name], (name, before, after)


def _best_path_slots(log_probs: torch.Tensor, target: list[int], blank: int) -> list[int] | None:
    """Brute force: of every path of labels that CTC-collapses to ``target``, the highest-scoring one's emission
    slots (the first slot of each id's run); None when there is no such path."""
    from asr.decoding import ctc_collapse

    best = None
    for path in itertools.product(sorted({blank, *target}), repeat=len(log_probs)):
        if ctc_collapse(list(path), blank) == target:
            score = sum(float(log_probs[t, s]) for t, s in enumerate(path))
            if best is None or score > best[0]:
                best = (score, path)
    if best is None:
        return None
    return [t for t, s in enumerate(best[1]) if s != blank and (t == 0 or best[1][t - 1] != s)]


def test_ctc_alignment_is_the_best_path():
    g = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(40):
        T_ = int(torch.randint(3, 7, (1,), generator=g))
        targets = [torch.randint(1, 4, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist()
                   for _ in range(3)]  # fmt: skip
        lengths = torch.randint(2, T_ + 1, (3,), generator=g)
        log_probs = torch.randn(3, T_, 5, generator=g).log_softmax(-1)
        got = ctc_alignment(log_probs, targets, lengths, blank=0)
        for b, target in enumerate(targets):
            want = _best_path_slots(log_probs[b, : int(lengths[b])], target, blank=0)
            if want is not None:
                assert got[b] == want, (target, int(lengths[b]))
                checked += 1
    assert checked > 60
    # no path (a repeated id needs a blank between: 3 slots are too few for [1, 1, 1]): spread evenly
    assert ctc_alignment(torch.zeros(1, 4, 3), [[1, 1, 1]], torch.tensor([4]), blank=0) == [[0, 1, 2]]


def test_aligned_canvas_is_one_slot_per_position_and_reads_back_as_the_transcript(manifest, tmp_path):
    from asr.pipeline import Pipeline

    cfg = T.TrainConfig(
        manifest=str(manifest), out=str(tmp_path / "run"), model="tiny-random", train="all", canvas="aligned"
    )
    speech, tokenizer, features = T.build_model(cfg)
    assert speech.canvas_length == speech.num_slots == 188
    examples, _ = T.prepare_examples(T.read_manifest(manifest), tokenizer, speech.canvas_length)
    cache = T.FrameCache(tmp_path / "frames", speech, features)
    batch = T.make_batch(examples, speech.prompt, speech.canvas_length, pad_weight=0.1)
    audio = speech.projector(cache.load(examples))
    aligned = T.aligned_batch(batch, T.ctc_log_probs(speech, audio), speech.prompt.pad_id, pad_weight=0.1)
    pad = speech.prompt.pad_id
    # the canvas ends where inference's ends for the batch's longest clip (the slots covering its audio), or at the
    # window's end when some transcript has no CTC path within its clip's slots
    fits = batch.min_slots <= batch.audio_slots
    want = max(speech.canvas_for(e.seconds) for e in examples) if bool(fits.all()) else speech.num_slots
    assert aligned.canvas.shape == aligned.canvas_weight.shape == aligned.canvas_text.shape == (len(examples), want)
    short = [e for e, f in zip(examples, fits.tolist(), strict=True) if f]
    assert short, "the tiny manifest should have clips whose transcript fits their slots"
    batch_short = T.make_batch(short, speech.prompt, speech.canvas_length)
    aligned_short = T.aligned_batch(batch_short, T.ctc_log_probs(speech, speech.projector(cache.load(short))), pad)
    assert aligned_short.canvas.shape[1] == max(speech.canvas_for(e.seconds) for e in short) < speech.num_slots
    pipe = Pipeline(speech, tokenizer, features, name="tiny", device="cpu")
    for b, example in enumerate(examples):
        row, text = aligned.canvas[b], aligned.canvas_text[b]
        assert pipe.decode(row.tolist()) == example.text  # inference reads the canvas the same way
        assert text.tolist() == (row != pad).tolist() and int(text.sum()) == len(example.ids)
        assert torch.equal(aligned.canvas_weight[b], torch.where(text, 1.0, 0.1))
        if batch.min_slots[b] <= batch.audio_slots[b]:  # the ids are placed within the clip's audio when they fit
            assert int(text.nonzero().max()) < batch.audio_slots[b]
    # read as greedy CTC output: a repeat side by side is one id (the targets never hold one), pads are dropped
    a, b = tokenizer.encode("ab", add_special_tokens=False)
    assert pipe.decode([a, a, pad, b, pad, a]) == "aba"
    speech.canvas = "packed"
    assert pipe.decode([a, a, pad, b, pad, a]) == "aaba"
    speech.canvas = "aligned"
    losses = T.compute_losses(speech, cache.load(examples), batch, cfg, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in losses.values())


def test_aligned_small_model_trains_exports_transcribes_and_continues_aligned(manifest, tmp_path):
    from transformers import DiffusionGemmaForBlockDiffusion

    from asr.loading import load_small_model

    out = tmp_path / "aligned"
    cfg = T.TrainConfig(
        manifest=str(manifest), out=str(out), model="small", train="all", whisper="tiny-random", tokenizer="byte",
        hidden=32, layers=2, heads=2, experts=2, projector_hidden=32, canvas="aligned", steps=2, batch_size=2,
    )  # fmt: skip
    T.train(cfg, progress=False)
    info = json.loads((out / "model" / "speech.json").read_text())
    assert info["canvas"] == "aligned" and info["canvas_length"] == 188
    # load_small_model reads the weight files itself (they may be int8) and builds what from_pretrained builds
    reference = DiffusionGemmaForBlockDiffusion.from_pretrained(out / "model" / "backbone")
    loaded = load_small_model(out / "model")[0].backbone
    assert loaded.generation_config == reference.generation_config and loaded.generation_config.eos_token_id
    want = reference.state_dict()
    assert {k: torch.equal(v, want[k]) for k, v in loaded.state_dict().items()} == dict.fromkeys(want, True)
    assert loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()  # still tied
    pipe = asr.load(str(out / "model"), device="cpu")
    assert pipe.model.canvas == "aligned" and pipe.model.canvas_length == pipe.model.num_slots == 188
    segment = pipe.transcribe(str(manifest.parent / "c1.flac"), steps=2).segments[0]
    assert isinstance(segment.text, str)
    # only the positions of the audio's slots are denoised (the rest of an aligned canvas is pad)
    assert segment.steps.canvas.shape == (2, M.audio_slots(segment.end - segment.start))
    code = T.main(["--manifest", str(manifest), "--out", str(tmp_path / "more"), "--model", str(out / "model"),
                   "--steps", "1", "--batch-size", "2", "--quiet"])  # fmt: skip
    assert code == 0 and T.read_checkpoint(tmp_path / "more" / T.CHECKPOINT)["config"]["canvas"] == "aligned"
    # --subsampling 4 re-strides its projector: the same weights at twice the rate; the canvas and the window follow
    code = T.main(["--manifest", str(manifest), "--out", str(tmp_path / "x4"), "--model", str(out / "model"),
                   "--subsampling", "4", "--steps", "1", "--batch-size", "2", "--lr", "0", "--warmup", "0",
                   "--quiet"])  # fmt: skip
    assert code == 0
    x4, _, _ = T.load_exported(tmp_path / "x4" / "model")
    assert x4.projector.subsampling == 4 and x4.canvas == "aligned" and x4.canvas_length == x4.num_slots == 375
    window = x4.backbone.config.text_config.sliding_window
    assert window >= 375 + 375 and {m.sliding_window for m in x4.backbone.modules()
                                    if getattr(m, "sliding_window", None) is not None} == {window}  # fmt: skip
    x8 = pipe.model.float()
    frames = torch.randn(1, 1500, x8.projector.in_dim)
    with torch.no_grad():  # every other x4 slot is the x8 slot
        torch.testing.assert_close(x4.projector(frames)[:, ::2], x8.projector(frames), rtol=1e-5, atol=1e-5)
    before = dict(x8.named_parameters())
    for name, tensor in x4.named_parameters():  # lr 0: the exported weights
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0, msg=name)
    assert isinstance(asr.load(str(tmp_path / "x4" / "model"), device="cpu").transcribe(
        str(manifest.parent / "c1.flac"), steps=2).text, str)  # fmt: skip
    with pytest.raises(ValueError, match="re-strided"):
        T.build_model(dataclasses.replace(cfg, model="tiny-random", subsampling=4))
    with pytest.raises(ValueError, match="--canvas"):
        T.build_model(dataclasses.replace(cfg, canvas="diagonal"))
    with pytest.raises(ValueError, match="needs --train all"):
        T.build_model(dataclasses.replace(cfg, train="projector+lora"))
    # speech.json's ctc_weight is how the model's transcripts are read by default (an export has none: 0)
    assert "ctc_weight" not in info and load_small_model(out / "model")[0].ctc_weight == 0
    for weight, problem in ((1.5, None), (-1, "ctc_weight must be"), ("x", "could not convert")):
        (out / "model" / "speech.json").write_text(json.dumps({**info, "ctc_weight": weight}))
        if problem is None:
            assert load_small_model(out / "model")[0].ctc_weight == 1.5
        else:
            with pytest.raises(asr.ModelLoadError, match=problem):
                load_small_model(out / "model")
    (out / "model" / "speech.json").write_text(json.dumps({**info, "canvas": "packed", "ctc_weight": 2}))
    with pytest.raises(asr.ModelLoadError, match="needs an aligned canvas"):
        load_small_model(out / "model")
    info["canvas"] = "diagonal"
    (out / "model" / "speech.json").write_text(json.dumps(info))
    with pytest.raises(asr.ModelLoadError, match="canvas must be one of"):
        load_small_model(out / "model")


def test_ctc_steps_train_ctc_only_first_then_every_loss(manifest, tmp_path):
    out = tmp_path / "phases"
    cfg = T.TrainConfig(manifest=str(manifest), out=str(out), model="tiny-random", train="all", canvas="aligned",
                        ctc_steps=3, steps=6, batch_size=2, save_every=100, profile_steps=1)  # fmt: skip
    rows = T.train(cfg, progress=False).history
    assert [set(r) & {"ctc", "diffusion", "ar"} for r in rows] == [{"ctc"}] * 3 + [{"ctc", "diffusion", "ar"}] * 3
    table = (out / "profile.txt").read_text()  # --profile-steps profiles a step with every loss (step 5)
    assert "scaled_dot_product" in table  # the backbone's attention ran in it (only the projector before step 3)


def test_autocast_bfloat16_computes_the_losses_in_bfloat16_and_keeps_float32_weights(manifest, tmp_path):
    base = dict(manifest=str(manifest), model="tiny-random", train="all", batch_size=2, steps=2, save_every=100)
    plain = T.train(T.TrainConfig(out=str(tmp_path / "a"), **base), progress=False).history
    mixed = T.train(T.TrainConfig(out=str(tmp_path / "b"), autocast="bfloat16", **base), progress=False).history
    for name in ("diffusion", "ar", "ctc"):  # the same batches and noise: bfloat16's rounding only
        assert mixed[0][name] != plain[0][name]
        assert mixed[0][name] == pytest.approx(plain[0][name], rel=0.05), name
    saved = T.read_checkpoint(tmp_path / "b" / T.CHECKPOINT)
    assert saved["config"]["autocast"] == "bfloat16"
    assert {t.dtype for t in saved["trainable"].values()} == {torch.float32}


def test_resume_gives_the_same_state(manifest, tmp_path):
    base = dict(manifest=str(manifest), model="tiny-random", batch_size=2, warmup=2, save_every=2, lr=2e-3)
    straight = T.train(T.TrainConfig(out=str(tmp_path / "a"), steps=4, **base), progress=False)
    T.train(T.TrainConfig(out=str(tmp_path / "b"), steps=2, **base), progress=False)
    resumed = T.train(T.TrainConfig(out=str(tmp_path / "b"), steps=4, **base), resume=True, progress=False)
    assert straight.step == resumed.step == 4
    a = T.read_checkpoint(tmp_path / "a" / T.CHECKPOINT)
    b = T.read_checkpoint(tmp_path / "b" / T.CHECKPOINT)
    assert a["step"] == b["step"] == 4
    for name, tensor in a["trainable"].items():
        assert torch.equal(tensor, b["trainable"][name]), name
    assert torch.equal(a["generator"], b["generator"])
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(state_a[k]["exp_avg"], state_b[k]["exp_avg"]) for k in state_a)
    rows = [json.loads(line) for line in (tmp_path / "b" / T.LOG).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["total"] for r in rows] == [r["total"] for r in straight.history]


def test_adapter_export_loads_with_asr_load(manifest, tmp_path):
    import asr
    from asr.loading import ADAPTER_FILE

    cfg = T.TrainConfig(manifest=str(manifest), out=str(tmp_path / "run"), model="tiny-random", steps=2, batch_size=2)
    T.train(cfg, progress=False)
    pipe = asr.load(str(tmp_path / "run" / ADAPTER_FILE), backbone="tiny-random", device="cpu")
    trained = T.read_checkpoint(tmp_path / "run" / T.CHECKPOINT)["trainable"]
    loaded = dict(pipe.model.named_parameters())
    for name, tensor in trained.items():
        assert torch.allclose(loaded[name], tensor), name
    text = pipe.transcribe(str(manifest.parent / "c0.flac"), steps=2, seed=0).text
    assert isinstance(text, str)


def test_train_all_updates_backbone_not_whisper(manifest, tmp_path):
    cfg = T.TrainConfig(
        manifest=str(manifest), out=str(tmp_path / "all"), model="tiny-random", train="all", steps=2, batch_size=2
    )
    speech, _, _ = T.build_model(cfg)
    before = {n: p.detach().clone() for n, p in speech.named_parameters()}
    T.train(cfg, progress=False)
    trained = T.read_checkpoint(tmp_path / "all" / T.CHECKPOINT)["trainable"]
    assert not any(n.startswith("whisper.") or ".lora_" in n for n in trained)
    assert any(n.startswith("backbone.model.decoder.layers") or "language_model.layers" in n for n in trained)
    changed = [n for n, t in trained.items() if not torch.equal(t, before[n])]
    assert any(n.startswith("projector.") for n in changed) and any(n.startswith("backbone.") for n in changed)
    folder = tmp_path / "all" / "model"
    info = json.loads((folder / "speech.json").read_text())
    assert (folder / "backbone" / "config.json").is_file() and (folder / "projector.safetensors").is_file()
    assert info["canvas_length"] == 16 and info["prompt"]["eos_ids"] == [1]
    loaded, tokenizer, _ = T.load_exported(folder)
    params = dict(loaded.named_parameters())
    for name, tensor in trained.items():  # exported in float16
        assert torch.allclose(params[name], tensor, rtol=1e-2, atol=1e-3), name
    assert loaded.prompt == speech.prompt and tokenizer.decode(tokenizer.encode("hi", add_special_tokens=False)) == "hi"

    pipe = asr.load(str(folder), device="cpu")
    assert "small model" in pipe.name and isinstance(
        pipe.transcribe(str(manifest.parent / "c1.flac"), steps=2).text, str
    )


def test_small_model_with_x4_projector_trains_exports_and_transcribes(manifest, tmp_path):
    out = tmp_path / "x4"
    cfg = T.TrainConfig(
        manifest=str(manifest), out=str(out), model="small", train="all", whisper="tiny-random", tokenizer="byte",
        hidden=32, layers=2, heads=2, experts=2, projector_hidden=32, subsampling=4, canvas_length=32, steps=2,
        batch_size=2,
    )  # fmt: skip
    speech, tokenizer, _ = T.build_model(cfg)
    assert speech.projector.subsampling == 4 and speech.num_slots == 375  # 1500 whisper frames / 4
    with pytest.raises(ValueError, match="power of two up to 8"):
        M.default_projector_layout(384, 32, 32, 3)
    assert speech.backbone.config.text_config.sliding_window >= 375 + 32  # the sliding layers see the whole prompt
    examples, _ = T.prepare_examples(T.read_manifest(manifest), tokenizer, 32)
    batch = T.make_batch(examples, speech.prompt, 32, subsampling=4)
    assert batch.audio_slots.tolist() == [math.ceil(e.seconds * 12.5) + 1 for e in examples]
    T.train(cfg, progress=False)
    pipe = asr.load(str(out / "model"), device="cpu")
    assert pipe.model.projector.subsampling == 4
    assert isinstance(pipe.transcribe(str(manifest.parent / "c1.flac"), steps=2).text, str)
    # trained further, it records the subsampling of the projector it has, not the option's default
    assert T.continue_settings(T.TrainConfig(manifest=str(manifest), model=str(out / "model"))).subsampling == 4


def test_projector_attention_starts_as_the_identity_trains_exports_and_continues(manifest, tmp_path):
    """--projector-attention 1 on an exported model: the same outputs until it trains, then the block lets a slot see
    the whole window (the convolutions' slots see 0.3 s); the export records it and loads with asr.load."""
    base = dict(manifest=str(manifest), train="all", steps=2, batch_size=2, canvas_length=16, lr=1e-2, warmup=0)
    T.train(T.TrainConfig(out=str(tmp_path / "a"), model="tiny-random", **base), progress=False)
    folder = tmp_path / "a" / "model"
    plain, _, _ = T.load_exported(folder)
    cfg = T.continue_settings(T.TrainConfig(out=str(tmp_path / "b"), model=str(folder), projector_attention=1, **base))
    speech, _, _ = T.build_model(cfg)
    assert [s.kind for s in speech.projector.layout][-2:] == ["linear", "attention"]
    frames = torch.randn(1, 1500, speech.projector.in_dim)
    with torch.no_grad():
        torch.testing.assert_close(speech.projector(frames), plain.projector(frames), rtol=0, atol=0)
    with pytest.raises(ValueError, match="already has 1 attention"):
        T.add_projector_attention(speech, 0)

    T.train(cfg, progress=False)
    pipe = asr.load(str(tmp_path / "b" / "model"), device="cpu")
    projector = pipe.model.projector
    assert projector.layout[-1] == M.attention_spec(projector.out_dim)
    assert isinstance(pipe.transcribe(str(manifest.parent / "c1.flac"), steps=2).text, str)
    moved = frames.clone()
    moved[:, :50] += 1.0  # the window's first second
    with torch.no_grad():
        assert not torch.allclose(projector(moved)[:, -1], projector(frames)[:, -1])  # the last slot notices
        assert torch.equal(plain.projector(moved)[:, -1], plain.projector(frames)[:, -1])  # without attention not
    settings = T.continue_settings(T.TrainConfig(manifest=str(manifest), model=str(tmp_path / "b" / "model")))
    assert settings.projector_attention == 1  # trained further, it keeps its block


def test_new_small_model_with_projector_attention():
    cfg = T.TrainConfig(model="small", train="all", whisper="tiny-random", tokenizer="byte", hidden=64, layers=2,
                        heads=2, experts=2, projector_hidden=32, projector_attention=2)  # fmt: skip
    speech, _, _ = T.build_model(cfg)
    assert [s.kind for s in speech.projector.layout] == ["conv"] * 3 + ["linear"] * 2 + ["attention"] * 2
    assert speech.projector.layout[-1].heads == 1 and speech.projector.out_dim == 64


def test_frame_augmentation_masks_time_spans_and_whole_channels(manifest, tmp_path):
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(16, 1500, 48) + 3.0  # no zeros of its own
    timed = T.augment_frames(frames, 0.2, 0.0, g)
    zeroed = (timed == 0).all(-1)
    assert ((timed == 0) == zeroed[..., None]).all() and 0.15 < zeroed.float().mean() < 0.22
    assert torch.equal(timed[~zeroed], frames[~zeroed])
    rows = ["".join(map(str, row)).rstrip("1") for row in zeroed[:4].int().tolist()]  # a run cut by the end: off
    runs = [len(run) for row in rows for run in row.split("0") if run]
    assert len(runs) > 20 and min(runs) >= T.FRAME_MASK_SPAN  # masks are whole spans (overlapping ones join)
    dropped = T.augment_frames(frames, 0.0, 0.25, g)
    gone = (dropped == 0).all(1)  # (B, d): whole channels of a clip
    assert ((dropped == 0).any(1) == gone).all() and 0.15 < gone.float().mean() < 0.35
    torch.testing.assert_close(
        dropped[~gone[:, None, :].expand_as(frames)], (frames / 0.75)[~gone[:, None, :].expand_as(frames)]
    )
    # in training: the CTC loss of one batch changes with augmentation, and repeats with the seed
    cfg, speech, _, batch_frames, batch = _setup(manifest, tmp_path, w_diffusion=0.0, w_ar=0.0)

    def ctc(**aug):
        run = dataclasses.replace(cfg, **aug)
        return T.compute_losses(speech, batch_frames, batch, run, torch.Generator().manual_seed(1))["ctc"].item()

    assert ctc(frame_mask=0.3, channel_dropout=0.2) == ctc(frame_mask=0.3, channel_dropout=0.2) != ctc()


def test_cli_runs_and_logs(manifest, tmp_path, capsys):
    out = tmp_path / "cli"
    code = T.main(["--manifest", str(manifest), "--out", str(out), "--steps", "2", "--batch-size", "2", "--quiet"])
    assert code == 0
    assert capsys.readouterr().out.strip().startswith("step 2: total")
    rows = [json.loads(line) for line in (out / T.LOG).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(
        np.isfinite(r[k]) for r in rows for k in ("diffusion", "ar", "ctc")
    )
    code = T.main(["--manifest", str(manifest), "--out", str(out), "--steps", "3", "--resume", "--quiet"])
    assert code == 0 and T.read_checkpoint(out / T.CHECKPOINT)["step"] == 3


def test_learning_rate_schedule():
    cfg = dataclasses.replace(T.TrainConfig(), lr=1.0, warmup=10, steps=110, min_lr_ratio=0.1)
    assert T.learning_rate(cfg, 0) == pytest.approx(0.1)
    assert T.learning_rate(cfg, 10) == pytest.approx(1.0)
    assert T.learning_rate(cfg, 110) == pytest.approx(0.1)
    again = dataclasses.replace(cfg, schedule_from=110, steps=210)  # a finished run resumed: a new cosine
    assert T.learning_rate(again, 110) == pytest.approx(1.0)
    assert T.learning_rate(again, 160) == pytest.approx(0.55)
    assert T.learning_rate(again, 210) == pytest.approx(0.1)


def test_resume_of_a_finished_run_restarts_the_schedule(manifest, tmp_path):
    """A finished run resumed to more steps (as a GPU call continuing the last one's model) starts a new cosine;
    an interrupted one keeps its schedule."""
    base = dict(manifest=str(manifest), model="tiny-random", batch_size=2, warmup=1, save_every=1, lr=1e-3)
    T.train(T.TrainConfig(out=str(tmp_path / "a"), steps=4, **base), progress=False)
    T.train(T.TrainConfig(out=str(tmp_path / "a"), steps=6, **base), resume=True, progress=False)
    assert T.read_checkpoint(tmp_path / "a" / T.CHECKPOINT)["config"]["schedule_from"] == 4
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "a" / T.LOG).read_text().splitlines()]
    assert lrs[3] == pytest.approx(3.25e-4) and lrs[4] == pytest.approx(1e-3)  # decayed, then a new cosine
    # interrupted: a checkpoint at step 4 of a run to step 10 (the run's other checkpoint, rewritten so)
    ckpt = tmp_path / "a" / T.CHECKPOINT
    state = T.read_checkpoint(ckpt)
    state["config"].update(steps=10, schedule_from=0)
    state["step"] = 4
    torch.save(state, ckpt)
    T.train(T.TrainConfig(out=str(tmp_path / "a"), steps=10, **base), resume=True, progress=False)
    assert T.read_checkpoint(ckpt)["config"]["schedule_from"] == 0
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "a" / T.LOG).read_text().splitlines()]
    cfg = T.TrainConfig(**{**base, "steps": 10})
    assert lrs[4:] == pytest.approx([T.learning_rate(cfg, i) for i in range(4, 10)])  # the first run's cosine


def test_frame_cache_key_follows_the_encoder_not_its_folder(tmp_path):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32)
    torch.manual_seed(0)
    WhisperEncoder(config).save_pretrained(tmp_path / "a")
    (tmp_path / "deeper").mkdir()
    (tmp_path / "a").rename(tmp_path / "deeper" / "b")
    WhisperEncoder.from_pretrained(tmp_path / "deeper" / "b").save_pretrained(tmp_path / "c")
    one = WhisperEncoder.from_pretrained(tmp_path / "deeper" / "b")
    two = WhisperEncoder.from_pretrained(tmp_path / "c")
    assert one.config._name_or_path != two.config._name_or_path
    assert T.module_fingerprint(one) == T.module_fingerprint(two)  # the same frames: the same cache folder
    with torch.no_grad():
        two.layer_norm.weight[0] += 1e-3
    assert T.module_fingerprint(one) != T.module_fingerprint(two)


def test_memory_cache_equals_file_cache(manifest, tmp_path, monkeypatch):
    cfg, speech, _, on_disk, _ = _setup(manifest, tmp_path)
    _, tokenizer, features = T.build_model(cfg)
    examples, _ = T.prepare_examples(T.read_manifest(manifest), tokenizer, speech.canvas_length)
    monkeypatch.setattr(T, "FEATURE_GROUP", 2)  # a chunk of 3 clips: log-mels in two threaded groups
    memory = T.MemoryFrameCache(speech, features, batch_size=3)  # 4 clips: two chunks, the store grows once
    assert memory.ensure(examples + examples[:1], progress=False) == len(examples)  # a repeated clip is stored once
    assert memory.ensure(examples, progress=False) == 0
    torch.testing.assert_close(memory.load(examples), on_disk, rtol=0, atol=0)  # both keep float16
    order = [2, 0, 2]
    torch.testing.assert_close(memory.load([examples[i] for i in order]), on_disk[order], rtol=0, atol=0)


def test_time_budget_sets_the_step_count(manifest, tmp_path):
    """--time-budget replaces --steps after 20 timed steps; a budget already spent leaves one more step.
    --profile-steps writes an operator table, and the timing starts after the profiled steps (steps 2-4 profiled,
    5 more steps of warm-up, steps 10-29 timed: --steps becomes 31)."""
    cfg = T.TrainConfig(manifest=str(manifest), out=str(tmp_path / "t"), model="tiny-random", batch_size=1,
                        steps=1000, warmup=2, save_every=1000, time_budget=1e-3, cache_dir="memory")  # fmt: skip
    result = T.train(dataclasses.replace(cfg, profile_steps=3), progress=False)
    assert result.step == 31
    table = (tmp_path / "t" / "profile.txt").read_text()
    assert table.startswith("3 training steps on cpu") and "aten::" in table
    saved = T.read_checkpoint(tmp_path / "t" / T.CHECKPOINT)
    assert saved["step"] == 31 and saved["config"]["steps"] == 31  # the LR schedule ended where training did
    assert not (tmp_path / "t" / "frames").exists()  # memory cache: no files


def test_training_continues_from_an_exported_model(manifest, tmp_path):
    """--model OUT/model (an exported small model) starts from its weights, trains all of it, exports it again."""
    first = T.TrainConfig(manifest=str(manifest), out=str(tmp_path / "a"), model="tiny-random", train="all",
                          steps=2, batch_size=2, canvas_length=16)  # fmt: skip
    T.train(first, progress=False)
    folder = tmp_path / "a" / "model"
    exported, _, _ = T.load_exported(folder)
    code = T.main(["--manifest", str(manifest), "--out", str(tmp_path / "b"), "--model", str(folder), "--steps", "1",
                   "--batch-size", "2", "--lr", "0", "--warmup", "0", "--quiet"])  # fmt: skip
    assert code == 0
    state = T.read_checkpoint(tmp_path / "b" / T.CHECKPOINT)
    assert state["config"]["train"] == "all" and state["config"]["canvas_length"] == 16
    params = dict(exported.named_parameters())
    assert any(n.startswith("backbone.") for n in state["trainable"])
    for name, tensor in state["trainable"].items():  # lr 0: still the exported weights
        torch.testing.assert_close(tensor, params[name], rtol=0, atol=0, msg=name)
    again = json.loads((tmp_path / "b" / "model" / "speech.json").read_text())
    assert again["whisper"] == "tiny-random" and again["canvas_length"] == 16


def test_prefetch_computes_frames_while_the_manifest_grows(manifest, tmp_path):
    """--prefetch/--wait-for: frames of the rows written so far are computed before the data is complete (a half
    written last line is left for later); then training reads --manifest, with every clip's frames cached."""
    import threading
    import time

    growing, done, frames = tmp_path / "growing.tsv", tmp_path / "data.done", tmp_path / "frames"
    final = tmp_path / "train.tsv"
    rows = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    absolute = [str(manifest.parent / r) for r in rows]  # another folder than the clips: absolute paths
    growing.write_text("", encoding="utf-8")
    log: list[str] = []

    def make_data():
        with open(growing, "a", encoding="utf-8") as f:
            f.write("".join(absolute[:2]) + absolute[2][:7])  # two rows and the start of a third
            f.flush()
            until = time.monotonic() + 30
            while len(list(frames.rglob("*.npy"))) < 2 and time.monotonic() < until:
                time.sleep(0.05)
            log.append(f"{len(list(frames.rglob('*.npy')))} frames before the data was complete")
            f.write(absolute[2][7:] + absolute[3])
        final.write_text("".join(absolute), encoding="utf-8")  # the training manifest exists only now
        done.touch()

    writer = threading.Thread(target=make_data)
    writer.start()
    cfg = T.TrainConfig(manifest=str(final), out=str(tmp_path / "run"), model="tiny-random", steps=1,
                        batch_size=2, warmup=0, cache_dir=str(frames), prefetch=str(growing),
                        wait_for=str(done))  # fmt: skip
    result = T.train(cfg, progress=False)
    writer.join()
    assert log == ["2 frames before the data was complete"]
    assert result.step == 1 and len(list(frames.rglob("*.npy"))) == len(rows)


def test_prefetch_gives_up_when_the_data_never_completes(manifest, tmp_path):
    cfg = T.TrainConfig(manifest=str(manifest), out=str(tmp_path / "run"), model="tiny-random", steps=1,
                        cache_dir="memory", prefetch=str(manifest), wait_for=str(tmp_path / "never"),
                        time_budget=0.5)  # fmt: skip
    with pytest.raises(SystemExit, match="gave up waiting"):
        T.train(cfg, progress=False)
    with pytest.raises(SystemExit):  # the command line wants both options
        T.main(["--manifest", str(manifest), "--out", str(tmp_path / "x"), "--prefetch", str(manifest)])


def test_out_of_memory_in_the_first_steps_halves_the_batch(manifest, tmp_path, monkeypatch, capsys):
    """A batch that does not fit (here: more than 2 clips, by fault injection) is halved in the first steps instead
    of ending the run; the checkpoint keeps the batch size that fitted. Later, out of memory is an error."""
    real = T.compute_losses
    calls: list[int] = []

    def tight(speech, frames, batch, cfg, generator):
        calls.append(len(frames))
        if len(frames) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(speech, frames, batch, cfg, generator)

    monkeypatch.setattr(T, "compute_losses", tight)
    cfg = T.TrainConfig(manifest=str(manifest), out=str(tmp_path / "run"), model="tiny-random", steps=3,
                        batch_size=8, warmup=0, cache_dir="memory")  # fmt: skip
    result = T.train(cfg, progress=False)
    assert result.step == 3 and calls == [8, 4, 2, 2, 2]
    assert T.read_checkpoint(tmp_path / "run" / T.CHECKPOINT)["config"]["batch_size"] == 2
    assert "batch size now 2" in capsys.readouterr().err
    calls.clear()

    def late(speech, frames, batch, cfg, generator):
        calls.append(len(frames))
        if len(calls) == 7:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(speech, frames, batch, cfg, generator)

    monkeypatch.setattr(T, "compute_losses", late)
    with pytest.raises(torch.OutOfMemoryError):  # at step 7 the batch has long been known to fit
        T.train(dataclasses.replace(cfg, out=str(tmp_path / "late"), steps=10, batch_size=2), progress=False)
    assert calls == [2] * 7

    def backbone_too_big(speech, frames, batch, cfg, generator):  # the CTC-only steps fit, the full ones do not
        if cfg.w_diffusion and len(frames) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(speech, frames, batch, cfg, generator)

    monkeypatch.setattr(T, "compute_losses", backbone_too_big)  # after --ctc-steps, the first full steps may halve
    phases = dataclasses.replace(cfg, out=str(tmp_path / "phases"), train="all", ctc_steps=6, steps=8, batch_size=2)
    assert T.train(phases, progress=False).step == 8
    assert T.read_checkpoint(tmp_path / "phases" / T.CHECKPOINT)["config"]["batch_size"] == 1
    monkeypatch.setattr(T, "compute_losses", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("always")))
    with pytest.raises(torch.OutOfMemoryError):  # batch 1 cannot be halved
        T.train(dataclasses.replace(cfg, out=str(tmp_path / "one"), batch_size=1), progress=False)


def test_compiled_losses_train_like_eager_and_a_failed_compile_falls_back(manifest, tmp_path, capsys):
    """--compile: the losses through torch.compile (aot_eager: the traced forward and backward graphs, without
    inductor's slow code generation) give eager's numbers; a backend that fails leaves training eager, not dead."""
    from torch._dynamo import register_backend
    from torch._dynamo.utils import counters

    cfg = T.TrainConfig(manifest=str(manifest), out=str(tmp_path / "eager"), model="tiny-random", steps=3,
                        batch_size=2, warmup=0, cache_dir="memory")  # fmt: skip
    eager = [row["total"] for row in T.train(cfg, progress=False).history]
    counters.clear()
    compiled = T.train(dataclasses.replace(cfg, out=str(tmp_path / "c"), compile="aot_eager"), progress=False)
    assert counters["stats"]["unique_graphs"] > 0  # it did go through dynamo
    np.testing.assert_allclose([row["total"] for row in compiled.history], eager, rtol=1e-5)

    @register_backend(name="asr_test_broken")
    def broken(gm, example_inputs):
        raise RuntimeError("this backend cannot compile")

    fallback = T.train(dataclasses.replace(cfg, out=str(tmp_path / "f"), compile="asr_test_broken"), progress=False)
    assert fallback.step == 3 and "--compile asr_test_broken failed at step 1" in capsys.readouterr().err
    assert np.isfinite([row["total"] for row in fallback.history]).all()


def test_noise_levels_uniform_or_skewed_towards_all_noise():
    """gamma = (1 - u) ** (1 / power): power 1 is the recipe's uniform (0, 1]; the mean of U ** (1 / p) is
    p / (p + 1), and every power uses the same draws (so runs that differ only in it see the same noise otherwise)."""
    draws = 1.0 - torch.rand(20_000, generator=torch.Generator().manual_seed(3))
    uniform = T.noise_levels(20_000, torch.Generator().manual_seed(3))
    assert torch.equal(uniform, draws) and 0 < float(uniform.min()) and float(uniform.max()) <= 1
    skewed = T.noise_levels(20_000, torch.Generator().manual_seed(3), power=3.0)
    assert float(skewed.mean()) == pytest.approx(3 / 4, abs=0.01)
    assert (skewed >= uniform).all() and float((skewed > 0.9).float().mean()) == pytest.approx(1 - 0.9**3, abs=0.01)


def test_trimmed_frames_encode_the_audio_and_take_a_silent_window_after_it(manifest, tmp_path):
    """``--trim-encoder`` (the default for small models, as asr.load runs them): a group of clips is encoded only over
    its longest clip (+ the margin); later positions are whisper's own output for a silent window."""
    cfg = T.TrainConfig(manifest=str(manifest), out=str(tmp_path / "run"), model="tiny-random")
    speech, tokenizer, features = T.build_model(cfg)
    examples, _ = T.prepare_examples(T.read_manifest(manifest), tokenizer, speech.canvas_length)
    full = T.FrameCache(tmp_path / "frames", speech, features)
    trimmed = T.FrameCache(tmp_path / "frames", speech, features, trim=True)
    assert full.root != trimmed.root  # never the one read as the other
    trimmed.ensure(examples, progress=False)
    frames = trimmed.load(examples)
    keep = math.ceil(max(e.seconds for e in examples) * M.WHISPER_FRAME_RATE) + M.ENCODER_MARGIN
    with torch.no_grad():
        silence = speech.whisper(torch.full((1, 80, 3000), M.SILENT_LOG_MEL)).last_hidden_state
    assert frames.shape == full.load(examples).shape
    torch.testing.assert_close(frames[:, keep:], silence[:, keep:].expand(len(examples), -1, -1), rtol=1e-3, atol=1e-3)
    assert not torch.allclose(frames[:, : keep - M.ENCODER_MARGIN], silence[:, : keep - M.ENCODER_MARGIN], atol=1e-2)
    memory = T.MemoryFrameCache(speech, features, trim=True)
    torch.testing.assert_close(memory.load(examples), frames, rtol=0, atol=0)


def test_small_models_train_on_trimmed_frames_by_default():
    assert T.trims_encoder(T.TrainConfig(train="all"))
    assert not T.trims_encoder(T.TrainConfig(train="projector+lora"))  # the released adapter reads whole windows
    assert not T.trims_encoder(T.TrainConfig(train="all", trim_encoder=False))
    args = T.parser().parse_args(["--manifest", "m.tsv", "--out", "o", "--no-trim-encoder"])
    assert args.trim_encoder is False
    assert T.parser().parse_args(["--manifest", "m.tsv", "--out", "o"]).trim_encoder is None


def test_a_trained_small_model_moves_to_another_vocabulary(manifest, tmp_path):
    """--model FOLDER --tokenizer NEW: every backbone weight but the tied embeddings kept; each new id's row the mean
    of the old rows of its text's old ids; the prompt in new ids; trains, exports and transcribes in the new one."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from make_tokenizer import train_tokenizer

    first = T.TrainConfig(
        manifest=str(manifest), out=str(tmp_path / "a"), model="small", train="all", whisper="tiny-random",
        tokenizer="byte", hidden=32, layers=2, heads=2, experts=2, projector_hidden=32, canvas_length=16, steps=1,
        batch_size=2,
    )  # fmt: skip
    T.train(first, progress=False)
    folder = tmp_path / "a" / "model"
    old, old_tok, _ = T.load_exported(folder)
    new_tok = train_tokenizer([t.upper() + "!" for t in TEXTS] * 20, 300, normalise=True)
    new_tok.save_pretrained(tmp_path / "tok")
    assert new_tok.decode(new_tok.encode("The Cat, sat!", add_special_tokens=False)) == "the cat sat"

    cfg = T.TrainConfig(manifest=str(manifest), model=str(folder), train="all", tokenizer=str(tmp_path / "tok"))
    cfg = T.continue_settings(cfg)
    speech, tokenizer, _ = T.build_model(cfg)
    assert len(tokenizer) == len(new_tok)
    vocab = speech.backbone.config.text_config.vocab_size
    assert vocab % 64 == 0 and len(new_tok) <= vocab < len(new_tok) + 64
    before, after = old.backbone.state_dict(), speech.backbone.state_dict()
    embedding_keys = {k for k, v in after.items() if v.shape == (vocab, 32)}
    assert embedding_keys and all(k.endswith("embed_tokens.weight") or k == "lm_head.weight" for k in embedding_keys)
    for key, tensor in after.items():
        if key not in embedding_keys:
            torch.testing.assert_close(tensor, before[key], rtol=0, atol=0, msg=key)
    rows, old_rows = speech.backbone.get_input_embeddings().weight, old.backbone.get_input_embeddings().weight
    assert speech.backbone.lm_head.weight.data_ptr() == rows.data_ptr()  # still tied
    piece = new_tok.convert_tokens_to_ids("Ġcat") if "Ġcat" in new_tok.get_vocab() else new_tok.encode(" cat")[0]
    old_ids = old_tok.encode(new_tok.decode([piece]), add_special_tokens=False)
    assert len(old_ids) > 1  # bytes in the old tokenizer
    torch.testing.assert_close(rows[piece], old_rows[old_ids].mean(0))
    for token in ["<pad>", "<eos>", "<bos>", "<|turn>", "<|audio|>", "<audio|>"]:  # the same token's row (other ids)
        new_id, old_id = new_tok.convert_tokens_to_ids(token), old_tok.convert_tokens_to_ids(token)
        torch.testing.assert_close(rows[new_id], old_rows[old_id], rtol=0, atol=0, msg=token)
    assert old_tok.convert_tokens_to_ids("<|audio|>") != new_tok.convert_tokens_to_ids("<|audio|>")
    assert speech.prompt == M.prompt_format_from_tokenizer(new_tok, eos_ids=[new_tok.eos_token_id])

    T.train(dataclasses.replace(cfg, out=str(tmp_path / "b"), steps=2, batch_size=2), progress=False)
    pipe = asr.load(str(tmp_path / "b" / "model"), device="cpu")
    assert len(pipe.tokenizer) == len(new_tok) and pipe.model.backbone.config.text_config.vocab_size == vocab
    assert isinstance(pipe.transcribe(str(manifest.parent / "c1.flac"), steps=2).text, str)
    shipped = pipe.tokenizer.encode("The Cat, sat!", add_special_tokens=False)  # the normaliser travels with it
    assert pipe.tokenizer.decode(shipped) == "the cat sat"
