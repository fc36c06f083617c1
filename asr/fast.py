"""Experimental: the prompt's prefill and :func:`asr.decoding.denoise`'s decoder step replayed as CUDA graphs.

Eager decoder steps are mostly kernel-launch overhead on a GPU (see the shared notes). Here the backbone's decoder
forward is captured once per (backbone, batch, prompt length, canvas) as a CUDA graph over static buffers: the
canvas, the self-conditioning logits, a per-row self-conditioning mask and a private copy of the prompt's KV cache
(the decoder only reads the cache, and every 30 s window has the same prompt length, so one graph serves every
request of that batch size: each call copies its prefilled K/V into the graph's cache tensors).

The first step has no self-conditioning: instead of a second graph, it runs the same graph with
``self_conditioning_mask`` all False, which zeroes the self-conditioning signal exactly as passing ``None`` does
(the logits buffer is finite, so ``x * 0`` is a signed zero and adds nothing).

The loop around the step is :func:`asr.decoding.denoise` itself (``step=`` the runner). On the CPU (no graphs; the
same static-buffer path runs eagerly) tests/test_fast.py checks that the result and the whole step record are
identical to the eager step's. On a GPU, ``python -m asr.bench --check`` compares the graph path with the eager one
on the real-size stack (identical tokens and canvases on an H200, bench/RESULTS.md). :class:`asr.Pipeline` uses it
on CUDA for batches of up to ``Pipeline.graph_max_batch`` windows.

The prefill (:class:`PrefillRunner`, one graph per batch size and prompt length) is graphed the same way: its input
embeddings go into a static buffer, and the replay rewrites the K/V tensors of one cache object made at capture,
which the step runner then copies into its own. The masks and position ids are made once, outside the graph (they
depend only on the shapes). A capture that fails (an operation a graph cannot hold) falls back to the eager prefill
with a warning, so a request never fails for it.
"""

from __future__ import annotations

import copy
import warnings

import torch
from transformers.cache_utils import Cache, DynamicCache

from . import decoding
from .decoding import DenoiseOptions, DenoiseResult

MAX_STEP_RUNNERS = 3  # per backbone: the least recently used is dropped (with its graph and buffers) beyond


class _GraphedRunner:
    """What the decoder-step runners share: a private prompt cache, and the capture of ``_forward`` as a CUDA graph
    (its return value, if any, is ``self.output``, overwritten by every replay)."""

    graph: torch.cuda.CUDAGraph | None = None
    output: torch.Tensor | None = None

    def __init__(
        self, backbone, cache: Cache, prompt_length: int, batch_size: int, canvas_length: int | None,
        use_graph: bool | None, private_cache: bool,
    ):  # fmt: skip
        """The state both runners need: the canvas buffer, the prompt cache (a private copy if ``private_cache``:
        a graph bakes in its tensors' addresses), the decoder's masks and positions."""
        device = backbone.device
        self.backbone = backbone
        self.use_graph = device.type == "cuda" if use_graph is None else use_graph
        self.canvas_length = canvas_length or backbone.config.canvas_length
        self.cache = copy.deepcopy(cache) if private_cache else cache
        self.canvas = torch.zeros((batch_size, self.canvas_length), dtype=torch.long, device=device)
        self.mask_mapping, self.positions = decoding.decoder_inputs(
            backbone, self.cache, prompt_length, batch_size, self.canvas_length
        )

    def _forward(self) -> torch.Tensor | None:
        raise NotImplementedError

    def _run(self) -> torch.Tensor | None:
        """``_forward()`` eagerly, or its graph's replay (captured at the first call); returns what it returns."""
        if not self.use_graph:
            return self._forward()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.output

    def load_cache(self, cache: Cache) -> None:
        """Copy a newly prefilled prompt cache (same shapes) into the runner's cache tensors."""
        for mine, new in zip(self.cache.layers, cache.layers, strict=True):
            if mine.keys.shape != new.keys.shape or mine.values.shape != new.values.shape:
                raise ValueError(
                    f"cache shapes {tuple(new.keys.shape)} differ from the runner's {tuple(mine.keys.shape)}"
                )
            mine.keys.copy_(new.keys)
            mine.values.copy_(new.values)

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up off the default stream, as torch.cuda.graphs asks
                self._forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.output = self._forward()
        self.graph = graph


class StepRunner(_GraphedRunner):
    """The decoder forward for fixed shapes, over static buffers; a CUDA graph on CUDA, eager elsewhere."""

    def __init__(self, backbone, cache: Cache, prompt_length: int, batch_size: int, use_graph: bool | None = None):
        super().__init__(backbone, cache, prompt_length, batch_size, None, use_graph, private_cache=True)
        device, vocab = backbone.device, backbone.config.text_config.vocab_size
        embed_dtype = backbone.model.decoder.embed_tokens.weight.dtype
        self.self_conditioning = torch.zeros((batch_size, self.canvas_length, vocab), dtype=embed_dtype, device=device)
        self.sc_mask = torch.zeros(batch_size, dtype=torch.bool, device=device)

    def _forward(self) -> torch.Tensor:
        return self.backbone(
            decoder_input_ids=self.canvas, self_conditioning_logits=self.self_conditioning,
            self_conditioning_mask=self.sc_mask, decoder_attention_mask=self.mask_mapping,
            past_key_values=self.cache, decoder_position_ids=self.positions,
        ).logits  # fmt: skip

    def __call__(self, canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        """Logits for ``canvas`` given the previous step's logits (``None`` at the first step)."""
        self.canvas.copy_(canvas)
        if self_conditioning is None:
            self.sc_mask.fill_(False)
        else:
            self.self_conditioning.copy_(self_conditioning)
            self.sc_mask.fill_(True)
        logits = self._run()
        return logits.clone() if self.use_graph else logits  # the graph overwrites its output at the next replay


class FusedStepRunner(_GraphedRunner):
    """The decoder step of :func:`asr.decoding.denoise_fused` for fixed shapes; a CUDA graph on CUDA, eager elsewhere.

    One (batch, canvas, vocab) buffer in the embedding dtype holds the lm_head's raw output (no float32 logits, no
    softcapping: the sampling kernel does that) and, once the loop has drawn from it, the next step's
    self-conditioning probabilities. The step computes the self-conditioning signal from it as transformers does
    (``probs @ embed_tokens.weight * embed_scale``, zeroed per row by a mask) and hands it to the model's
    self-conditioning block through a forward pre-hook (:func:`_self_conditioning_hook`), so the model's own
    forward runs unchanged with ``self_conditioning_logits=None``. ``use_graph`` runs it as a CUDA graph over static
    buffers and a private copy of the prompt cache, as :class:`StepRunner`."""

    def __init__(
        self, backbone, cache: Cache, prompt_length: int, batch_size: int, canvas_length: int | None = None,
        use_graph: bool | None = None,
    ):  # fmt: skip
        graph = backbone.device.type == "cuda" if use_graph is None else use_graph
        super().__init__(backbone, cache, prompt_length, batch_size, canvas_length, use_graph, private_cache=graph)
        device, vocab = backbone.device, backbone.config.text_config.vocab_size
        # zeros, not empty: the first step multiplies it by a False mask, and 0 * NaN would not vanish
        shape = (batch_size, self.canvas_length, vocab)
        self.buffer = torch.zeros(shape, dtype=backbone.model.decoder.embed_tokens.weight.dtype, device=device)
        self.conditioned = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self.hook = _self_conditioning_hook(backbone)

    def _forward(self) -> None:
        decoder = self.backbone.model.decoder
        embed = decoder.embed_tokens
        signal = torch.matmul(self.buffer, embed.weight) * embed.embed_scale.to(embed.weight.dtype)
        self.hook.signal = signal * self.conditioned.to(signal.dtype)[:, None, None]
        try:
            hidden = self.backbone.model(
                decoder_input_ids=self.canvas, past_key_values=self.cache, decoder_attention_mask=self.mask_mapping,
                decoder_position_ids=self.positions,
            ).last_hidden_state  # fmt: skip
        finally:
            self.hook.signal = None
        lm_head = self.backbone.lm_head
        if lm_head._forward_hooks or lm_head._forward_pre_hooks:  # hooks (the benchmark's forced canvas) see it run
            self.buffer.copy_(lm_head(hidden))
        else:
            torch.matmul(hidden, lm_head.weight.t(), out=self.buffer)

    def __call__(self, canvas: torch.Tensor, conditioned: bool) -> torch.Tensor:
        """The raw logits of ``canvas`` (the runner's buffer), self-conditioned on the buffer's probabilities when
        ``conditioned``."""
        self.canvas.copy_(canvas)
        self.conditioned.fill_(conditioned)
        self._run()
        return self.buffer


class _SignalHook:
    """A forward pre-hook on the decoder's self-conditioning block: replaces its signal argument by ``signal`` while
    that is set (transformers passes zeros when called without self-conditioning logits)."""

    def __init__(self):
        self.signal: torch.Tensor | None = None

    def __call__(self, module, args):
        if self.signal is None:
            return None
        inputs_embeds, zeros = args
        if zeros.shape != self.signal.shape:
            raise ValueError(f"self-conditioning signal {tuple(self.signal.shape)}, the model's {tuple(zeros.shape)}")
        return inputs_embeds, self.signal


def _self_conditioning_hook(backbone) -> _SignalHook:
    """The backbone's :class:`_SignalHook` (registered on first use)."""
    hook = backbone.__dict__.get("_asr_signal_hook")
    if hook is None:
        hook = backbone.__dict__["_asr_signal_hook"] = _SignalHook()
        backbone.model.decoder.self_conditioning.register_forward_pre_hook(hook)
    return hook


class PrefillRunner:
    """:meth:`SpeechModel.prefill` of a new cache for fixed shapes, over a static input buffer; a CUDA graph on CUDA.

    The returned cache is the runner's own: the next call overwrites its tensors (copy what must outlive it).
    """

    def __init__(self, speech, batch_size: int, prompt_length: int, use_graph: bool | None = None):
        backbone = speech.backbone
        device = backbone.device
        self.speech = speech
        self.use_graph = device.type == "cuda" if use_graph is None else use_graph
        hidden = backbone.config.text_config.hidden_size
        self.embeds = torch.zeros((batch_size, prompt_length, hidden), dtype=backbone.dtype, device=device)
        _, self.inputs = speech.prefill_inputs(self.embeds)  # masks and positions: the same for every call
        self.graph: torch.cuda.CUDAGraph | None = None
        self.cache: DynamicCache | None = None

    def _new_cache(self, initialized: list[bool] | None = None) -> DynamicCache:
        """An empty cache; ``initialized``: set up those layers now (a graph cannot hold their first allocation)."""
        cache = self.speech.new_cache()
        if initialized is not None:
            empty = self.embeds.new_empty(0)
            for layer, init in zip(cache.layers, initialized, strict=True):
                if init:
                    layer.lazy_initialization(empty, empty)
        return cache

    def _forward(self, cache: DynamicCache) -> DynamicCache:
        language_model = self.speech.backbone.model.encoder.language_model
        language_model(inputs_embeds=self.embeds, past_key_values=cache, **self.inputs)
        return cache

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up off the default stream, as torch.cuda.graphs asks
                warm = self._forward(self._new_cache())
        torch.cuda.current_stream().wait_stream(stream)
        cache = self._new_cache([layer.is_initialized for layer in warm.layers])
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._forward(cache)
        self.graph, self.cache = graph, cache

    def __call__(self, embeds: torch.Tensor) -> DynamicCache:
        """The prompt cache of ``embeds`` (batch, prompt length, hidden)."""
        self.embeds.copy_(embeds)
        if self.use_graph and self.graph is None:
            try:
                self._capture()
            except RuntimeError as exc:  # keep serving: eager from now on
                warnings.warn(f"prefill CUDA graph capture failed, prefill runs eagerly: {exc}", stacklevel=2)
                self.use_graph, self.graph, self.cache = False, None, None
        if not self.use_graph:
            return self._forward(self._new_cache())
        self.graph.replay()
        return self.cache


def prefill(speech, embeds: torch.Tensor, use_graph: bool | None = None) -> DynamicCache:
    """:meth:`SpeechModel.prefill` by the model's :class:`PrefillRunner` for these shapes (made on first use).

    The cache is overwritten by the next call for the same shapes: hand it to :func:`denoise`, which copies it."""
    runners = speech.backbone.__dict__.setdefault("_asr_prefill_runners", {})
    key = (embeds.shape[0], embeds.shape[1], use_graph)
    if key not in runners:
        runners[key] = PrefillRunner(speech, embeds.shape[0], embeds.shape[1], use_graph)
    return runners[key](embeds)


def drop_runners(backbone) -> None:
    """Forget the backbone's prefill and step runners (their graphs and buffers), e.g. before measuring memory."""
    for name in ("_asr_prefill_runners", "_asr_step_runners"):
        backbone.__dict__.pop(name, None)


def step_runner(
    backbone, cache: Cache, prompt_length: int, batch_size: int, use_graph: bool | None = None, fused: bool = False
):
    """The backbone's runner (:class:`StepRunner`, or :class:`FusedStepRunner` if ``fused``) for these shapes (made
    on first use, then reused), with ``cache`` loaded."""
    runners = backbone.__dict__.setdefault("_asr_step_runners", {})
    key = (batch_size, prompt_length, backbone.config.canvas_length, use_graph, fused)
    if key in runners:
        runners[key] = runner = runners.pop(key)  # the most recently used last
        runner.load_cache(cache)
        return runner
    while len(runners) >= MAX_STEP_RUNNERS:  # each holds a full-vocabulary buffer and a graph's memory
        runners.pop(next(iter(runners)))
    runners[key] = runner = (FusedStepRunner if fused else StepRunner)(
        backbone, cache, prompt_length, batch_size, use_graph=use_graph
    )
    return runner


def fused_sampling(backbone) -> bool:
    """Whether ``backbone`` samples with :func:`asr.decoding.denoise_fused` (:func:`use_fused_sampling`)."""
    return bool(backbone.__dict__.get("_asr_fused_sampling", False))


def use_fused_sampling(backbone, on: bool = True) -> None:
    """Make :class:`asr.Pipeline` denoise ``backbone``'s canvases with :func:`asr.decoding.denoise_fused`
    (:func:`asr.kernels.use_fused` does, which ``asr.load`` calls on CUDA; not with ``ASR_KERNELS=off``)."""
    backbone.__dict__["_asr_fused_sampling"] = on


@torch.no_grad()
def denoise(
    backbone,
    cache: Cache,
    prompt_length: int,
    batch_size: int,
    options: DenoiseOptions = DenoiseOptions(),
    generator: torch.Generator | None = None,
    record: bool = True,
    use_graph: bool | None = None,
    initial: torch.Tensor | None = None,
    keep_logits: bool = False,
    fused: bool = False,
    canvas_length: int | None = None,
) -> DenoiseResult:
    """:func:`asr.decoding.denoise`, with each decoder step run by a :class:`StepRunner` (same results); ``fused``:
    :func:`asr.decoding.denoise_fused` with a :class:`FusedStepRunner` (no ``keep_logits``).

    Runners are kept for reuse (:func:`step_runner`), except a fused one with ``use_graph=False``, made for the
    call; only that one takes another ``canvas_length`` than the model's."""
    if fused and keep_logits:
        raise ValueError("the fused loop keeps no logits (keep_logits is for the joint CTC reading)")
    if fused and use_graph is False:  # made for this call only: its buffer is a full-vocabulary tensor
        step = FusedStepRunner(backbone, cache, prompt_length, batch_size, canvas_length, use_graph=False)
        return decoding.denoise_fused(
            backbone, step, batch_size, options, generator, record, canvas_length=canvas_length, initial=initial
        )
    if canvas_length not in (None, backbone.config.canvas_length):
        raise ValueError("a kept runner runs the model's own canvas length (another: use_graph=False, or denoise)")
    if fused:
        step = step_runner(backbone, cache, prompt_length, batch_size, use_graph, fused=True)
        return decoding.denoise_fused(backbone, step, batch_size, options, generator, record, initial=initial)
    runner = step_runner(backbone, cache, prompt_length, batch_size, use_graph)
    return decoding.denoise(
        backbone, cache, prompt_length, batch_size, options, generator, record, step=runner, initial=initial,
        keep_logits=keep_logits,
    )  # fmt: skip
