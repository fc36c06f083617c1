"""The step-by-step denoiser against transformers' own DiffusionGemmaForBlockDiffusion.generate()."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from conftest import with_pauses

from asr import audio as A
from asr.decoding import (
    DenoiseOptions,
    StableAndConfident,
    ctc_canvas,
    ctc_collapse,
    ctc_word_slots,
    denoise,
    eager_step,
    entropy_bound_accept,
    fuse_ctc,
    sample,
    temperature_at,
)
from asr.loading import build_tiny
from asr.pipeline import Pipeline


@pytest.fixture(scope="module")
def stack():
    speech, _, _ = build_tiny(seed=0)
    return speech.eval()


def _prefilled(speech, batch: int, seed: int):
    """Prompt embeddings of random features; cache A = full prompt (ours), cache B = all but the last token."""
    feats = torch.randn(batch, 80, 3000, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        embeds = speech.prompt_embeddings(speech.embed_audio(feats))
        head = speech.prefill(embeds[:, :-1])
        reference_cache = copy.deepcopy(head)
        ours = speech.prefill(embeds[:, -1:], head)  # what generate() does with the last prompt token
    last_ids = torch.full((batch, 1), speech.prompt.ids(speech.num_slots)[-1])
    return ours, reference_cache, last_ids, embeds.shape[1]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("steps", [1, 8])
def test_same_canvas_as_generate(stack, batch, steps):
    cache, ref_cache, last_ids, prompt_len = _prefilled(stack, batch, seed=batch * 10 + steps)
    canvas = stack.canvas_length
    seed = 1234 + steps
    ours = denoise(
        stack.backbone, cache, prompt_len, batch, DenoiseOptions(steps=steps), torch.Generator().manual_seed(seed)
    )
    torch.manual_seed(seed)
    ref = stack.backbone.generate(
        input_ids=last_ids, past_key_values=ref_cache, max_new_tokens=canvas, max_denoising_steps=steps
    )
    assert ref.sequences.shape == (batch, 1 + canvas)
    assert torch.equal(ours.tokens, ref.sequences[:, -canvas:])
    assert ours.steps_run == steps
    for b in range(batch):  # the last recorded draft is what was returned
        assert ours.trace[b].argmax[-1].tolist() == ours.tokens[b].tolist()
        assert len(ours.trace[b]) == steps


def test_a_shorter_canvas_matches_generate_with_that_canvas_length(stack):
    """``canvas_length`` (what an aligned canvas uses for short audio) denoises that many positions, exactly as
    generate() does for a model configured with that canvas length."""
    batch, steps, seed, length = 2, 4, 11, 9
    cache, ref_cache, last_ids, prompt_len = _prefilled(stack, batch, seed=5)
    options = DenoiseOptions(steps=steps)
    ours = denoise(stack.backbone, cache, prompt_len, batch, options, torch.Generator().manual_seed(seed),
                   canvas_length=length)  # fmt: skip
    full = stack.canvas_length
    stack.backbone.config.canvas_length = length
    try:
        torch.manual_seed(seed)
        ref = stack.backbone.generate(
            input_ids=last_ids, past_key_values=ref_cache, max_new_tokens=length, max_denoising_steps=steps
        )
    finally:
        stack.backbone.config.canvas_length = full
    assert ours.tokens.shape == (batch, length) and ours.trace[0].canvas.shape == (steps, length)
    assert torch.equal(ours.tokens, ref.sequences[:, -length:])


def test_early_stop_matches_generate(stack):
    """A loose confidence threshold makes the stability rule end denoising early, in both implementations."""
    batch, steps, seed = 2, 24, 3
    cache, ref_cache, last_ids, prompt_len = _prefilled(stack, batch, seed=3)
    options = DenoiseOptions(steps=steps, confidence_threshold=1e6, t_min=0.01, t_max=0.02)
    ours = denoise(stack.backbone, cache, prompt_len, batch, options, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    ref = stack.backbone.generate(
        input_ids=last_ids, past_key_values=ref_cache, max_new_tokens=stack.canvas_length,
        max_denoising_steps=steps, confidence_threshold=1e6, t_min=0.01, t_max=0.02,
    )  # fmt: skip
    assert torch.equal(ours.tokens, ref.sequences[:, -stack.canvas_length :])
    assert ours.steps_run < steps  # it did stop early


def test_record_is_consistent(stack):
    cache, _, _, prompt_len = _prefilled(stack, 2, seed=7)
    result = denoise(stack.backbone, cache, prompt_len, 2, DenoiseOptions(steps=5), torch.Generator().manual_seed(0))
    trace = result.trace[0]
    vocab = stack.backbone.config.text_config.vocab_size
    assert trace.canvas.shape == (5, stack.canvas_length)
    assert (trace.canvas >= 0).all() and (trace.canvas < vocab).all()
    # temperatures fall linearly from t_max to t_min (t at k steps remaining = t_min + (t_max - t_min) k / N)
    assert trace.temperature.tolist() == pytest.approx([0.4 + 0.4 * k / 5 for k in range(5, 0, -1)])
    assert ((trace.confidence > 0) & (trace.confidence <= 1)).all()
    # accepted positions of step i carry the sampled token into the canvas of step i+1
    for i in range(4):
        kept = trace.accepted[i]
        assert (trace.canvas[i + 1][kept] == trace.sampled[i][kept]).all()
    step = trace[2]
    assert step.index == 2 and len(step.argmax) == stack.canvas_length and isinstance(step.accepted[0], bool)


def test_recorded_confidence_and_entropy_of_the_first_step(stack):
    """Step 0's record against the decoder re-run on its input canvas, scaled by its temperature (t_max), with
    transformers' own Categorical entropy: the record computes both its own way."""
    batch, steps = 2, 4
    cache, _, _, prompt_len = _prefilled(stack, batch, seed=11)
    options = DenoiseOptions(steps=steps, t_min=0.005, t_max=0.01)  # sharp: the random tiny model is near uniform
    result = denoise(stack.backbone, cache, prompt_len, batch, options, torch.Generator().manual_seed(5))
    canvas = torch.as_tensor(np.stack([t.canvas[0] for t in result.trace])).long()
    with torch.no_grad():
        logits = eager_step(stack.backbone, cache, prompt_len, batch)(canvas, None)
    scaled = logits / options.t_max
    entropy = torch.distributions.Categorical(logits=scaled).entropy()
    confidence = torch.softmax(scaled, dim=-1).amax(dim=-1)
    for b, trace in enumerate(result.trace):
        assert trace.temperature[0] == pytest.approx(options.t_max)
        np.testing.assert_allclose(trace.entropy[0], entropy[b].numpy(), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(trace.confidence[0], confidence[b].numpy(), rtol=2e-3, atol=1e-4)
    assert entropy.std() > 0.1  # positions differ, so the comparison is not between constants


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sample_draws_what_torch_multinomial_draws(dtype):
    """``sample`` (a batch row at a time, no full float32 probabilities) against ``torch.multinomial`` over the
    whole softmax, as generate() calls it: the same tokens, and the generator left in the same state (so the
    re-noising draw after it is the same too)."""
    scaled = (torch.randn(3, 50, 700, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    ours_gen, ref_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    tokens, confidence, entropy = sample(scaled, ours_gen)
    probs = torch.softmax(scaled, dim=-1, dtype=torch.float32)
    reference = torch.multinomial(probs.view(-1, 700), 1, generator=ref_gen).view(3, 50)
    assert torch.equal(tokens, reference)
    assert torch.equal(ours_gen.get_state(), ref_gen.get_state())
    assert len(tokens.unique()) > 50  # a real draw, not one token
    torch.testing.assert_close(confidence, probs.amax(dim=-1))
    reference_entropy = torch.distributions.Categorical(logits=scaled.float()).entropy()
    torch.testing.assert_close(entropy, reference_entropy, rtol=1e-4, atol=1e-4)
    assert sample(scaled, torch.Generator().manual_seed(7), record=False)[1:] == (None, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cdf_draw_follows_the_softmax_distribution(dtype):
    """``sample(draw="cdf")``: one uniform number per position (the generator advances by that much only), tokens
    distributed as softmax(scaled) (every position's frequency within 5 standard errors of its probability, a token
    of probability 0 never drawn), the same record as the exact draw, and the same tokens again for the same seed."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0, float("-inf")])
    scaled = logits.expand(2, 20_000, 7).to(dtype)
    probs = torch.softmax(scaled[0, 0], dim=-1, dtype=torch.float32).double()  # as rounded to dtype
    gen = torch.Generator().manual_seed(3)
    tokens, confidence, entropy = sample(scaled, gen, draw="cdf")
    expected_state = torch.Generator().manual_seed(3)
    torch.rand(2, 20_000, 1, generator=expected_state, dtype=torch.float64)
    assert torch.equal(gen.get_state(), expected_state.get_state())
    frequency = torch.bincount(tokens.flatten(), minlength=7).double() / tokens.numel()
    stderr = (probs * (1 - probs) / tokens.numel()).sqrt()
    assert frequency[6] == 0 and ((frequency - probs).abs() <= 5 * stderr + 1e-12).all(), (frequency, probs)
    exact = sample(scaled, torch.Generator().manual_seed(3))
    assert torch.equal(confidence, exact[1]) and torch.equal(entropy, exact[2])
    reference_entropy = torch.distributions.Categorical(logits=scaled.float()).entropy()  # finite with a -inf logit
    torch.testing.assert_close(entropy, reference_entropy, rtol=1e-4, atol=1e-4)
    assert torch.equal(sample(scaled, torch.Generator().manual_seed(3), draw="cdf")[0], tokens)
    with pytest.raises(ValueError, match="draw must be one of"):
        DenoiseOptions(draw="gumbel")


def test_denoise_with_the_cdf_draw(stack):
    """denoise() with ``DenoiseOptions(draw="cdf")``: reproducible for a seed, other tokens than the exact draw's
    (other random numbers), every recorded sample a token of the vocabulary."""
    cache, _, _, prompt_len = _prefilled(stack, 2, seed=4)
    runs = [
        denoise(stack.backbone, copy.deepcopy(cache), prompt_len, 2, DenoiseOptions(steps=4, draw=draw),
                torch.Generator().manual_seed(5))
        for draw in ("cdf", "cdf", "exact")
    ]  # fmt: skip
    assert torch.equal(runs[0].tokens, runs[1].tokens) and not torch.equal(runs[0].tokens, runs[2].tokens)
    vocab = stack.backbone.config.text_config.vocab_size
    assert all(0 <= t.sampled.min() and t.sampled.max() < vocab for t in runs[0].trace)


def test_seed_reproducible_and_seeds_differ(stack):
    outs = []
    for seed in (0, 0, 1):
        cache, _, _, prompt_len = _prefilled(stack, 1, seed=3)
        outs.append(
            denoise(stack.backbone, cache, prompt_len, 1, DenoiseOptions(steps=3), torch.Generator().manual_seed(seed))
        )
    assert torch.equal(outs[0].tokens, outs[1].tokens)
    assert (outs[0].trace[0].canvas[0] != outs[2].trace[0].canvas[0]).any()


def test_options_validate():
    with pytest.raises(ValueError):
        DenoiseOptions(steps=0)
    with pytest.raises(ValueError):
        DenoiseOptions(t_min=0.9, t_max=0.5)
    with pytest.raises(ValueError, match="start"):
        DenoiseOptions(start="silence")
    for weight in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="ctc_weight"):
            DenoiseOptions(ctc_weight=weight)


def test_kept_logits_are_the_last_steps_and_change_nothing_else(stack):
    """keep_logits returns the logits the last step computed: re-running the decoder on the last recorded input
    canvas with the previous step's logits as self-conditioning gives them again."""
    batch, steps = 2, 3
    cache, _, _, prompt_len = _prefilled(stack, batch, seed=21)
    options = DenoiseOptions(steps=steps, early_stop=False)
    args = (stack.backbone, cache, prompt_len, batch, options)
    plain = denoise(*args, torch.Generator().manual_seed(4))
    kept = denoise(*args, torch.Generator().manual_seed(4), keep_logits=True)
    assert plain.logits is None and torch.equal(kept.tokens, plain.tokens)
    assert kept.logits.shape == (batch, stack.canvas_length, stack.backbone.config.text_config.vocab_size)
    assert torch.equal(kept.logits.argmax(-1), kept.tokens)  # the final canvas is their argmax
    canvases = [torch.as_tensor(np.stack([t.canvas[k] for t in kept.trace])).long() for k in range(steps)]
    step = eager_step(stack.backbone, cache, prompt_len, batch)
    with torch.no_grad():
        logits = None
        for k, canvas in enumerate(canvases):  # the recorded inputs, each step conditioned on the one before,
            # scaled by that step's temperature (t_max at the first, which has steps remaining)
            previous_t = options.t_min + (options.t_max - options.t_min) * (steps - k + 1) / steps
            logits = step(canvas, None if logits is None else logits / previous_t)
    torch.testing.assert_close(kept.logits, logits)


def test_fuse_ctc_adds_the_two_heads_log_probabilities():
    denoiser = torch.log(torch.tensor([[[0.6, 0.3, 0.1], [0.5, 0.1, 0.4]]]))
    ctc = torch.log(torch.tensor([[[0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]]))
    assert fuse_ctc(denoiser, ctc, 0.0).tolist() == [[0, 0]]  # the denoiser alone
    assert fuse_ctc(denoiser, ctc, 100.0).tolist() == [[1, 2]]  # the CTC head alone
    # weight 1: position 0: 0.6*0.2=.12, 0.3*0.7=.21, .01 -> 1; position 1: .05, .02, .28 -> 2
    assert fuse_ctc(denoiser, ctc, 1.0).tolist() == [[1, 2]]
    # weight 0.5: position 0: 0.6*sqrt(.2)=.268 > 0.3*sqrt(.7)=.251 -> 0; position 1: .158, .045, .335 -> 2
    assert fuse_ctc(denoiser, ctc, 0.5).tolist() == [[0, 2]]


def test_an_initial_canvas_is_the_first_step_input(stack):
    """denoise(initial=...) starts from that canvas (the first recorded input) and draws no starting noise; a canvas
    of the wrong shape is refused."""
    cache, _, _, prompt_len = _prefilled(stack, 2, seed=5)
    vocab = stack.backbone.config.text_config.vocab_size
    initial = torch.randint(0, vocab, (2, stack.canvas_length), generator=torch.Generator().manual_seed(9))
    options = DenoiseOptions(steps=3)
    got = denoise(stack.backbone, cache, prompt_len, 2, options, torch.Generator().manual_seed(0), initial=initial)
    for b in range(2):
        assert (got.trace[b].canvas[0] == initial[b].numpy()).all()
    noise = denoise(stack.backbone, cache, prompt_len, 2, options, torch.Generator().manual_seed(0))
    assert (noise.trace[0].canvas[0] != initial[0].numpy()).any()
    with pytest.raises(ValueError, match="initial canvas"):
        denoise(stack.backbone, cache, prompt_len, 2, options, initial=initial[:, :-1])


def test_ctc_canvas_puts_each_emission_at_its_first_slot():
    """The aligned canvas layout of a CTC best path (what asr.train.aligned_batch trains the denoiser on): the first
    slot of each run keeps its token, the others and blanks become blank; the greedy reading is unchanged."""
    path = torch.tensor([[5, 5, 0, 7, 7, 7, 0, 5], [0, 0, 3, 3, 0, 3, 4, 4]])
    assert ctc_canvas(path, blank=0).tolist() == [[5, 0, 0, 7, 0, 0, 0, 5], [0, 0, 3, 0, 0, 3, 4, 0]]
    for row, canvas in zip(path.tolist(), ctc_canvas(path, blank=0).tolist(), strict=True):
        assert ctc_collapse(canvas, blank=0) == ctc_collapse(row, blank=0)


def test_ctc_collapse():
    assert ctc_collapse([], blank=0) == []
    assert ctc_collapse([0, 5, 5, 0, 5, 3, 3, 0, 0], blank=0) == [5, 5, 3]  # a blank separates a real repeat
    assert ctc_collapse([7, 7, 7], blank=0) == [7]


def test_ctc_word_slots():
    """Words of a one-id-per-slot reading with the slots of their first and last letter tokens; repeats merged,
    blanks dropped, late punctuation does not stretch a word."""
    from asr.loading import byte_tokenizer

    tok = byte_tokenizer()
    h, i, sp, t, e, r, dot = (tok.encode(c, add_special_tokens=False)[0] for c in "hi ter.")
    slots = [0, h, h, 0, i, 0, 0, sp, t, h, e, 0, r, 0, e, e, 0, 0, 0, dot, 0]
    #        0  1  2  3  4  5  6  7   8  9  10 11 12 13 14 15 16 17 18 19   20
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    # the lone space (slot 7) ends "hi" without a letter; "there." starts at its "t"
    assert ctc_word_slots(slots, 0, decode) == [("hi", 1, 4), ("there.", 8, 14)]
    assert ctc_word_slots([0, 0, 0], 0, decode) == []
    assert ctc_word_slots([h, h, h], 0, decode) == [("h", 0, 0)]


def test_transcribe_ctc_is_the_greedy_ctc_head(tiny):
    """Pipeline.transcribe_ctc per 30 s window: argmax of the projector output through lm_head, collapsed."""
    wave = with_pauses([("speech", 25.0), ("pause", 1.0), ("speech", 8.0)], seed=4)
    reports = []
    got = tiny.transcribe_ctc(wave, batch_size=1, progress=lambda f, msg: reports.append(f))
    spans = A.split_on_silence(wave)
    assert len(spans) == 2 and reports == [0.0, 0.5, 1.0]  # one report per batch of one window, then done
    assert set(got.timings.stages) == {"decode_audio", "features", "encoder+projector", "ctc"}
    assert got.steps == 0 and [(s.start, s.end) for s in got.segments] == [(s.start, s.end) for s in spans]
    m = tiny.model
    for seg, span in zip(got.segments, spans, strict=True):
        feats = tiny.feature_extractor([A.cut(wave, span)], sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            frames = m.whisper(feats).last_hidden_state
            logits = torch.nn.functional.linear(m.projector(frames), m.backbone.lm_head.weight)
        best = logits.argmax(-1)[0].tolist()
        expected = [t for t, _ in itertools.groupby(best) if t != m.prompt.pad_id]
        assert seg.tokens == expected and seg.steps is None


def test_same_canvas_as_generate_under_bf16_autocast(stack):
    """What Pipeline(cpu_bf16=True) runs: prefill and denoising under CPU bfloat16 autocast give generate()'s canvas
    under the same autocast."""
    batch, steps, seed = 2, 6, 21
    dtypes = set()
    hook = stack.backbone.lm_head.register_forward_hook(lambda m, a, out: dtypes.add(out.dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cache, ref_cache, last_ids, prompt_len = _prefilled(stack, batch, seed=5)
            options = DenoiseOptions(steps=steps)
            ours = denoise(stack.backbone, cache, prompt_len, batch, options, torch.Generator().manual_seed(seed))
            torch.manual_seed(seed)
            ref = stack.backbone.generate(
                input_ids=last_ids, past_key_values=ref_cache, max_new_tokens=stack.canvas_length,
                max_denoising_steps=steps,
            )  # fmt: skip
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}  # the autocast did reach the model
    assert torch.equal(ours.tokens, ref.sequences[:, -stack.canvas_length :])
    assert all(np.isfinite(t.entropy).all() for t in ours.trace)


def test_pipeline_cpu_bf16_runs_the_models_in_bfloat16(tiny):
    """cpu_bf16: the encoder and the decoder compute in bfloat16 (the log-mel features do not), the transcript and
    its record come out as usual; it is refused off the CPU."""
    bf16 = Pipeline(tiny.model, tiny.tokenizer, tiny.feature_extractor, name="bf16", device="cpu", cpu_bf16=True)
    seen: dict[str, set] = {"whisper": set(), "decoder": set()}
    hooks = [
        tiny.model.whisper.layers[0].fc1.register_forward_hook(lambda m, a, out: seen["whisper"].add(out.dtype)),
        tiny.model.backbone.lm_head.register_forward_hook(lambda m, a, out: seen["decoder"].add(out.dtype)),
    ]
    try:
        wave = with_pauses([("speech", 4.0)], seed=2)
        got = bf16.transcribe(wave, steps=3, seed=0)
        assert seen == {"whisper": {torch.bfloat16}, "decoder": {torch.bfloat16}}
        seen = {"whisper": set(), "decoder": set()}
        tiny.transcribe(wave, steps=3, seed=0)
        assert seen == {"whisper": {torch.float32}, "decoder": {torch.float32}}
    finally:
        for h in hooks:
            h.remove()
    assert len(got.segments) == 1 and len(got.segments[0].steps) == 3
    assert np.isfinite(got.segments[0].steps.entropy).all()
    assert "cpu_bf16=True" in repr(bf16)
    with pytest.raises(ValueError, match="cpu_bf16"):
        Pipeline(tiny.model, tiny.tokenizer, tiny.feature_extractor, name="x", device="cuda", cpu_bf16=True)


# --- the fused loop's pieces against the library's classes ------------------------------------------------------------


def test_entropy_bound_accept_is_the_samplers_rule():
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        EntropyBoundSampler,
        EntropyBoundSamplerConfig,
    )

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, 50, generator=gen) * torch.rand(3, 40, 1, generator=gen) * 12
    canvas, sampled = torch.zeros(3, 40, dtype=torch.long), torch.ones(3, 40, dtype=torch.long)
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    for bound in (0.1, 1.0, 5.0):
        sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=bound), 40, 50, 8)
        sampler.accept_canvas(canvas, sampled, logits, 3)
        mask = entropy_bound_accept(entropy, bound)
        assert torch.equal(mask, sampler.accepted_token_mask)
        assert 0 < int(mask.sum()) < mask.numel()


def test_stable_and_confident_is_the_librarys_stopping_rule():
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import StableAndConfidentStoppingCriteria

    gen = torch.Generator().manual_seed(1)
    for stability in (0, 1, 2):
        ours, lib = StableAndConfident(stability, 0.5), StableAndConfidentStoppingCriteria(stability, 0.5)
        results = []
        for step in range(8):
            argmax = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, step]])  # the last row never stabilises
            logits = torch.randn(3, 3, 10, generator=gen) * (step + 1)  # ever more confident
            entropy = torch.distributions.Categorical(logits=logits).entropy()
            got = ours(argmax, entropy)
            assert torch.equal(got, lib(argmax, logits)), (stability, step)
            results.append(got)
        stopped = torch.stack(results)  # (steps, rows)
        assert stopped[:, :2].any()  # the stable rows stop once confident
        if stability:
            assert not stopped[:, 2].any()  # the changing row never does


def test_temperature_at_is_the_librarys_schedule():
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        LinearTemperatureScheduleLogitsProcessor,
    )

    options = DenoiseOptions(steps=8, t_min=0.3, t_max=0.9)
    processor = LinearTemperatureScheduleLogitsProcessor(options.t_min, options.t_max, options.steps)
    for remaining in range(8, 0, -1):
        scores = torch.ones(1, 1, 2)
        assert float(processor(None, scores, cur_step=remaining)[0, 0, 0]) == pytest.approx(
            1 / temperature_at(options, remaining), rel=1e-6
        )


# --- the lexicon reading ---------------------------------------------------------------------------------------------


def _lexicon(tmp_path, counts: dict[str, int], **weights):
    from asr.decoding import Lexicon

    path = tmp_path / "lexicon.tsv"
    path.write_text("".join(f"{w}\t{c}\n" for w, c in counts.items()))
    return Lexicon.read(path, **weights)


def _labelling_log_prob(log_probs: torch.Tensor, labels: tuple[int, ...]) -> float:
    """log P(labels | log_probs) summed over every CTC path, by torch's own CTC loss (blank 0)."""
    loss = torch.nn.functional.ctc_loss(
        log_probs[:, None], torch.tensor([labels], dtype=torch.long), [log_probs.shape[0]], [len(labels)],
        blank=0, reduction="sum", zero_infinity=False,
    )  # fmt: skip
    return -float(loss)


def test_lexicon_search_without_a_language_model_finds_the_most_probable_labelling(tmp_path):
    """With every word scored 0 and no pruning, the prefix beam search is exact CTC decoding: the labelling it
    returns is the most probable of all labellings, as torch's CTC loss scores each one (enumerated)."""
    from asr.decoding import lexicon_search

    lexicon = _lexicon(tmp_path, {"a": 1}, alpha=0.0, beta=0.0, oov=0.0, beam=10_000, top_k=3,
                       min_log_prob=-float("inf"))  # fmt: skip
    pieces = [None, (True, "a"), (False, "b"), (True, "c")]
    for seed in range(5):
        log_probs = torch.log_softmax(2 * torch.randn(6, 4, generator=torch.Generator().manual_seed(seed)), -1)
        canvas = lexicon_search(log_probs, lexicon, pieces, blank=0)
        found = tuple(ctc_collapse(canvas, blank=0))
        labellings = [x for n in range(7) for x in itertools.product((1, 2, 3), repeat=n)]
        scores = {x: _labelling_log_prob(log_probs, x) for x in labellings if len(x) > 0}
        scores[()] = float(log_probs[:, 0].sum())
        best = max(scores, key=scores.get)
        assert scores[found] == pytest.approx(scores[best], abs=1e-5), (seed, found, best)
        greedy = tuple(ctc_collapse(log_probs.argmax(-1).tolist(), blank=0))
        assert scores[found] >= scores[greedy] - 1e-6


def test_lexicon_search_spells_words_from_the_lexicon(tmp_path):
    """Slots whose argmax spells the non-word 'sharpply' (a weak extra 'p') are read as 'sharply' when the lexicon
    has it, and as the argmax when out-of-lexicon words cost nothing; the canvas keeps each token at a slot where
    it is likely, and its greedy CTC reading is the transcript."""
    from asr.decoding import lexicon_search

    pieces = [None, (True, "sharp"), (False, "p"), (False, "ly"), (True, "he")]
    rows = [(4, 0.9), (0, 0.9), (1, 0.9), (2, 0.55), (3, 0.9), (0, 0.9)]  # he, -, sharp, p (55 %), ly, -
    probs = torch.full((len(rows), 5), 1e-3)
    for t, (token, p) in enumerate(rows):
        probs[t, token] = p
        probs[t, 0] = max(probs[t, 0].item(), 1 - p) if token != 0 else p
    log_probs = torch.log(probs / probs.sum(-1, keepdim=True))
    words = {"he": 50, "sharply": 5, "sharp": 5}
    canvas = lexicon_search(log_probs, _lexicon(tmp_path, words, alpha=1.0, beta=0.0, oov=-10.0), pieces, blank=0)
    assert ctc_collapse(canvas, blank=0) == [4, 1, 3] and len(canvas) == len(rows)
    assert canvas[0] == 4 and canvas[2] == 1 and canvas[4] == 3  # where the slots say them
    free = _lexicon(tmp_path, words, alpha=0.0, beta=0.0, oov=0.0)
    assert ctc_collapse(lexicon_search(log_probs, free, pieces, blank=0), blank=0) == [4, 1, 2, 3]


def test_lexicon_files_are_checked(tmp_path):
    from asr.decoding import Lexicon

    (tmp_path / "bad.tsv").write_text("the\t3\nword without count\n")
    with pytest.raises(ValueError, match="bad.tsv:2"):
        Lexicon.read(tmp_path / "bad.tsv")
    lexicon = _lexicon(tmp_path, {"the": 3, "then": 1})
    assert lexicon.is_prefix("th") and lexicon.is_prefix("then") and not lexicon.is_prefix("thx")
    assert lexicon.word_score("the") == pytest.approx(lexicon.alpha * np.log(0.75))
    assert lexicon.word_score("thx") == lexicon.oov


def test_lexicon_word_pairs_interpolate_with_the_unigram(tmp_path):
    """'previous word<TAB>count' lines give P(word | previous) = u P(word) + (1 - u) (the pair's share of the pairs
    listed after that word), computed here from the counts; after a word without pairs, and at the start, P(word)."""
    from asr.decoding import Lexicon

    path = tmp_path / "lexicon.tsv"
    path.write_text("the\t6\ncat\t3\ndog\t1\nthe cat\t1\nthe dog\t3\n")
    lexicon = Lexicon.read(path, alpha=2.0, unigram_weight=0.25)
    assert lexicon.words == ("cat", "dog", "the")  # pairs add no words
    assert lexicon.word_score("dog", "the") == pytest.approx(2.0 * np.log(0.25 * 0.1 + 0.75 * 0.75))
    assert lexicon.word_score("the", "the") == pytest.approx(2.0 * np.log(0.25 * 0.6))  # no such pair
    assert lexicon.word_score("dog", "cat") == lexicon.word_score("dog") == pytest.approx(2.0 * np.log(0.1))
    assert lexicon.word_score("dog", "") == lexicon.word_score("dog")
    assert lexicon.word_score("cow", "the") == lexicon.oov
    for bad in ("a b c\t1\n", "the \t1\n", "the cat\t0\n"):
        path.write_text("the\t6\n" + bad)
        with pytest.raises(ValueError, match="lexicon.tsv:2"):
            Lexicon.read(path)
    with pytest.raises(ValueError, match="unigram_weight"):
        Lexicon((), {}, unigram_weight=0.0)


def test_lexicon_search_reads_a_word_by_the_word_before_it(tmp_path):
    """Two words the slots cannot tell apart ('red'/'read' at 50/50 after 'i' or 'the'): the pairs pick 'read'
    after 'i' and 'red' after 'the', where the unigram alone picks the same word both times."""
    from asr.decoding import Lexicon, lexicon_search

    pieces = [None, (True, "i"), (True, "the"), (True, "red"), (True, "read")]
    path = tmp_path / "lexicon.tsv"
    path.write_text("i\t5\nthe\t5\nred\t2\nread\t1\ni read\t9\ni red\t1\nthe red\t9\nthe read\t1\n")

    def first_word(token: int, lexicon: Lexicon) -> list[int]:
        probs = torch.full((4, 5), 1e-3)
        probs[0, token], probs[1, 0], probs[3, 0] = 0.99, 0.99, 0.99
        probs[2, 3] = probs[2, 4] = 0.495
        log_probs = torch.log(probs / probs.sum(-1, keepdim=True))
        return ctc_collapse(lexicon_search(log_probs, lexicon, pieces, blank=0), blank=0)

    paired = Lexicon.read(path, alpha=1.0, beta=0.0, unigram_weight=0.2)
    assert first_word(1, paired) == [1, 4] and first_word(2, paired) == [2, 3]
    path.write_text("i\t5\nthe\t5\nred\t2\nread\t1\n")
    unigram = Lexicon.read(path, alpha=1.0, beta=0.0)
    assert first_word(1, unigram) == [1, 3] and first_word(2, unigram) == [2, 3]
