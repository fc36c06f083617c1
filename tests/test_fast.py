"""asr.fast.denoise (static buffers; a CUDA graph on a GPU) must equal asr.decoding.denoise step for step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import with_pauses

from asr import decoding, fast
from asr.decoding import DenoiseOptions, denoise
from asr.loading import build_tiny
from asr.pipeline import Pipeline


@pytest.fixture(scope="module")
def stack():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add contention on shared CPUs
    speech, _, _ = build_tiny(seed=0)
    yield speech.eval()
    torch.set_num_threads(threads)


def _cache(speech, batch: int, seed: int):
    feats = torch.randn(batch, 80, 3000, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        embeds = speech.prompt_embeddings(speech.embed_audio(feats))
        return speech.prefill(embeds), embeds.shape[1]


CASES = [  # (batch, options) of the loops compared with the reference loop
    (1, DenoiseOptions(steps=1)),
    (3, DenoiseOptions(steps=8)),
    (2, DenoiseOptions(steps=24, confidence_threshold=1e6, t_min=0.01, t_max=0.02)),  # stops early
]


def _same(a, b) -> None:
    assert torch.equal(a.tokens, b.tokens)
    assert a.steps_run == b.steps_run
    for ta, tb in zip(a.trace, b.trace, strict=True):
        for name in ("temperature", "canvas", "sampled", "argmax", "accepted", "confidence", "entropy"):
            np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name), err_msg=name)


@pytest.mark.parametrize(("batch", "options"), CASES)
def test_identical_to_reference(stack, batch, options):
    stack.backbone.__dict__.pop("_asr_step_runners", None)
    for call, seed in enumerate((5, 6)):  # the second call reuses the runner with a newly loaded cache
        cache, prompt_len = _cache(stack, batch, seed=seed + 100 * batch)
        ref = denoise(stack.backbone, cache, prompt_len, batch, options, torch.Generator().manual_seed(seed))
        got = fast.denoise(stack.backbone, cache, prompt_len, batch, options, torch.Generator().manual_seed(seed))
        _same(ref, got)
        assert len(stack.backbone._asr_step_runners) == 1, call
    if options.steps == 24:
        assert ref.steps_run < 24


def test_identical_to_reference_from_an_initial_canvas(stack):
    """The runner path passes DenoiseOptions.start's initial canvas through: same result as the reference loop."""
    stack.backbone.__dict__.pop("_asr_step_runners", None)
    cache, prompt_len = _cache(stack, 2, seed=3)
    vocab = stack.backbone.config.text_config.vocab_size
    initial = torch.randint(0, vocab, (2, stack.canvas_length), generator=torch.Generator().manual_seed(4))
    options = DenoiseOptions(steps=4)
    ref = denoise(stack.backbone, cache, prompt_len, 2, options, torch.Generator().manual_seed(1), initial=initial)
    got = fast.denoise(stack.backbone, cache, prompt_len, 2, options, torch.Generator().manual_seed(1), initial=initial)
    _same(ref, got)
    assert (got.trace[0].canvas[0] == initial[0].numpy()).all()


def test_runner_refuses_another_prompt_length(stack):
    cache, prompt_len = _cache(stack, 1, seed=0)
    runner = fast.StepRunner(stack.backbone, cache, prompt_len, 1)
    assert not runner.use_graph  # no CUDA graphs on the CPU
    with torch.no_grad():
        head = stack.prefill(stack.prompt_embeddings(stack.embed_audio(torch.zeros(1, 80, 3000)))[:, :-1])
    with pytest.raises(ValueError, match="cache shapes"):
        runner.load_cache(head)


def test_pipeline_uses_the_runner_for_small_batches(stack):
    """Pipeline(cuda_graphs=True) goes through asr.fast for batches up to graph_max_batch, with the same transcript
    and step record as the eager pipeline; larger batches stay eager."""
    speech, tokenizer, features = build_tiny(seed=0)
    speech.eval()
    wave = with_pauses([("speech", 25.0), ("pause", 1.0), ("speech", 25.0), ("pause", 1.0), ("speech", 5.0)], seed=3)
    eager = Pipeline(speech, tokenizer, features, name="eager", device="cpu")
    assert eager.cuda_graphs is False  # the default on the CPU
    graphed = Pipeline(speech, tokenizer, features, name="graphed", device="cpu", cuda_graphs=True)
    ref = eager.transcribe(wave, steps=6, seed=9)
    assert len(ref.segments) == 3 and "_asr_step_runners" not in speech.backbone.__dict__
    got = graphed.transcribe(wave, steps=6, seed=9)
    (key,) = speech.backbone._asr_step_runners  # one runner, made for the batch of 3 windows
    assert key[0] == 3
    (key,) = speech.backbone._asr_prefill_runners  # and one prefill runner
    assert key[0] == 3
    for a, b in zip(ref.segments, got.segments, strict=True):
        assert a.tokens == b.tokens and a.text == b.text
        for name in ("canvas", "sampled", "argmax", "accepted", "confidence", "entropy"):
            np.testing.assert_array_equal(getattr(a.steps, name), getattr(b.steps, name), err_msg=name)
    speech.backbone.__dict__.pop("_asr_step_runners")
    speech.backbone.__dict__.pop("_asr_prefill_runners")
    graphed.graph_max_batch = 2  # a batch of 3 windows is over the limit: eager
    graphed.transcribe(wave, steps=2, seed=9)
    assert "_asr_step_runners" not in speech.backbone.__dict__
    assert "_asr_prefill_runners" not in speech.backbone.__dict__


def _same_cache(a, b) -> None:
    assert a.get_seq_length() == b.get_seq_length()
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert torch.equal(la.keys, lb.keys) and torch.equal(la.values, lb.values)


def test_prefill_runner_gives_the_prefill_cache(stack):
    """PrefillRunner (masks made once, static input buffer) gives SpeechModel.prefill's cache, call after call; so
    does the graph's way of filling a cache whose layers were set up before the capture."""
    runner = None
    for seed in (1, 2):
        feats = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            embeds = stack.prompt_embeddings(stack.embed_audio(feats))
            ref = stack.prefill(embeds)
            runner = runner or fast.PrefillRunner(stack, 2, embeds.shape[1])
            assert not runner.use_graph  # no CUDA graphs on the CPU
            _same_cache(runner(embeds), ref)
            preset = runner._new_cache([layer.is_initialized for layer in ref.layers])
            assert all(layer.is_initialized for layer in preset.layers)
            _same_cache(runner._forward(preset), ref)


def test_prefill_capture_failure_falls_back_to_eager(stack):
    """A graph capture that raises (here: no CUDA) warns once and the prefill runs eagerly, same cache."""
    feats = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        embeds = stack.prompt_embeddings(stack.embed_audio(feats))
        runner = fast.PrefillRunner(stack, 1, embeds.shape[1], use_graph=True)
        with pytest.warns(UserWarning, match="prefill CUDA graph capture failed"):
            got = runner(embeds)
        assert runner.use_graph is False and runner.graph is None
        _same_cache(got, stack.prefill(embeds))


# --- the fused loop (asr.decoding.denoise_fused with a FusedStepRunner) ----------------------------------------------


@pytest.mark.parametrize(("batch", "options"), CASES)
def test_fused_loop_equals_reference(stack, batch, options):
    """With the eager draw (the path without the kernel), the fused loop (raw logits, the self-conditioning signal
    computed from the step's probabilities buffer and handed in by the pre-hook) gives the reference loop's tokens
    and step record. Rows that stop early are self-conditioned differently after their stop (on their newest
    probabilities, not on their last logits), so there the record is compared up to the first possible stop."""
    cache, prompt_len = _cache(stack, batch, seed=7 + batch)
    ref = denoise(stack.backbone, cache, prompt_len, batch, options, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    got = fast.denoise(stack.backbone, cache, prompt_len, batch, options, gen, fused=True, use_graph=False)
    assert torch.equal(ref.tokens, got.tokens) and ref.steps_run == got.steps_run
    compared = ref.steps_run if options.steps < 24 else 2
    assert options.steps < 24 or ref.steps_run < 24
    for ta, tb in zip(ref.trace, got.trace, strict=True):
        for name in ("temperature", "canvas", "sampled", "argmax", "accepted", "confidence"):
            np.testing.assert_array_equal(getattr(ta, name)[:compared], getattr(tb, name)[:compared], err_msg=name)
        np.testing.assert_allclose(ta.entropy[:compared], tb.entropy[:compared], atol=2e-3)
    assert not any(key[-1] for key in stack.backbone.__dict__.get("_asr_step_runners", {}))  # made for the call only


def test_fused_loop_with_the_kernel(stack):
    """The loop with asr.kernels.sample_logits (Triton's interpreter here): valid tokens, the same result for the
    same seed, another for another seed (its own random numbers: not the reference's)."""
    cache, prompt_len = _cache(stack, 1, seed=2)
    options = DenoiseOptions(steps=2, early_stop=False)
    vocab = stack.backbone.config.text_config.vocab_size

    def run(seed):
        step = fast.FusedStepRunner(stack.backbone, cache, prompt_len, 1, use_graph=False)
        gen = torch.Generator().manual_seed(seed)
        return decoding.denoise_fused(stack.backbone, step, 1, options, gen, use_kernel=True)

    a = run(1)
    assert a.steps_run == 2 and 0 <= int(a.tokens.min()) and int(a.tokens.max()) < vocab
    assert torch.equal(a.tokens, run(1).tokens)
    assert not torch.equal(a.tokens, run(2).tokens)
    assert np.isfinite(a.trace[0].entropy).all() and (a.trace[0].confidence <= 1).all()


def test_pipeline_with_fused_sampling(stack):
    """Pipeline denoises with the fused loop when the backbone's fused sampling is on (asr.load does it on CUDA):
    on the CPU (the eager draw) the same transcript as the reference loop, for eager and runner batches; a joint
    CTC reading, which needs the last logits, keeps the reference loop."""
    speech, tokenizer, features = build_tiny(seed=0)
    speech.eval()
    wave = with_pauses([("speech", 25.0), ("pause", 1.0), ("speech", 5.0)], seed=4)
    ref = Pipeline(speech, tokenizer, features, name="ref", device="cpu").transcribe(wave, steps=4, seed=2)
    fast.use_fused_sampling(speech.backbone)
    assert fast.fused_sampling(speech.backbone)
    for graphs in (False, True):
        pipe = Pipeline(speech, tokenizer, features, name="fused", device="cpu", cuda_graphs=graphs)
        got = pipe.transcribe(wave, steps=4, seed=2)
        assert [s.tokens for s in got.segments] == [s.tokens for s in ref.segments]
        runners = speech.backbone.__dict__.get("_asr_step_runners", {})
        assert [key[-1] for key in runners] == ([True] if graphs else [])  # the runner kept is the fused one


def test_step_runners_kept_are_bounded(stack):
    """Each kept runner holds a full-vocabulary buffer: beyond MAX_STEP_RUNNERS the least recently used goes."""
    stack.backbone.__dict__.pop("_asr_step_runners", None)
    caches = {b: _cache(stack, b, seed=b) for b in (1, 2, 3, 4)}
    for b in (1, 2, 3, 1, 4):  # 1 is used again before 4 arrives: 2 is the least recently used
        fast.step_runner(stack.backbone, caches[b][0], caches[b][1], b, use_graph=False)
    assert [key[0] for key in stack.backbone._asr_step_runners] == [3, 1, 4]
    assert fast.MAX_STEP_RUNNERS == 3
