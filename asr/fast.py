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


class StepRunner:
    """The decoder forward for fixed shapes, over static buffers; a CUDA graph on CUDA, eager elsewhere."""

    def __init__(self, backbone, cache: Cache, prompt_length: int, batch_size: int, use_graph: bool | None = None):
        config = backbone.config
        device = backbone.device
        self.backbone = backbone
        self.use_graph = device.type == "cuda" if use_graph is None else use_graph
        canvas_length, vocab = config.canvas_length, config.text_config.vocab_size
        embed_dtype = backbone.model.decoder.embed_tokens.weight.dtype
        self.cache = copy.deepcopy(cache)  # private tensors: their addresses are baked into the graph
        self.canvas = torch.zeros((batch_size, canvas_length), dtype=torch.long, device=device)
        self.self_conditioning = torch.zeros((batch_size, canvas_length, vocab), dtype=embed_dtype, device=device)
        self.sc_mask = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self.mask_mapping, self.positions = decoding.decoder_inputs(backbone, self.cache, prompt_length, batch_size)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None

    def load_cache(self, cache: Cache) -> None:
        """Copy a newly prefilled prompt cache (same shapes) into the runner's cache tensors."""
        for mine, new in zip(self.cache.layers, cache.layers, strict=True):
            if mine.keys.shape != new.keys.shape or mine.values.shape != new.values.shape:
                raise ValueError(
                    f"cache shapes {tuple(new.keys.shape)} differ from the runner's {tuple(mine.keys.shape)}"
                )
            mine.keys.copy_(new.keys)
            mine.values.copy_(new.values)

    def _forward(self) -> torch.Tensor:
        return self.backbone(
            decoder_input_ids=self.canvas, self_conditioning_logits=self.self_conditioning,
            self_conditioning_mask=self.sc_mask, decoder_attention_mask=self.mask_mapping,
            past_key_values=self.cache, decoder_position_ids=self.positions,
        ).logits  # fmt: skip

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up off the default stream, as torch.cuda.graphs asks
                self._forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._forward()
        self.graph = graph

    def __call__(self, canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        """Logits for ``canvas`` given the previous step's logits (``None`` at the first step)."""
        self.canvas.copy_(canvas)
        if self_conditioning is None:
            self.sc_mask.fill_(False)
        else:
            self.self_conditioning.copy_(self_conditioning)
            self.sc_mask.fill_(True)
        if not self.use_graph:
            return self._forward()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.logits.clone()  # the graph overwrites its output at the next replay


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


def step_runner(backbone, cache: Cache, prompt_length: int, batch_size: int, use_graph: bool | None = None):
    """The backbone's runner for these shapes (made on first use, then reused), with ``cache`` loaded."""
    runners = backbone.__dict__.setdefault("_asr_step_runners", {})
    key = (batch_size, prompt_length, backbone.config.canvas_length, use_graph)
    if key not in runners:
        runners[key] = StepRunner(backbone, cache, prompt_length, batch_size, use_graph)
    else:
        runners[key].load_cache(cache)
    return runners[key]


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
) -> DenoiseResult:
    """:func:`asr.decoding.denoise`, with each decoder step run by a :class:`StepRunner` (same results)."""
    runner = step_runner(backbone, cache, prompt_length, batch_size, use_graph)
    return decoding.denoise(
        backbone, cache, prompt_length, batch_size, options, generator, record, step=runner, initial=initial,
        keep_logits=keep_logits,
    )  # fmt: skip
