"""Denoising the transcript canvas, step by step, with a record of every step.

The loop is transformers' ``DiffusionGemmaForBlockDiffusion.generate()`` inner loop (one canvas), driven with the
library's own sampler, temperature schedule and stopping rule, and consuming random numbers in the same order:
for the same seed it returns exactly the canvas ``generate()`` returns (tests/test_decoding.py checks this), with
the exact draw (``DenoiseOptions.draw``; ``"cdf"`` draws from the same distribution with fewer random numbers).
Unlike ``generate()`` it takes an explicit ``torch.Generator`` (no global RNG state shared between requests) and
records, per step, the input canvas, the sampled canvas, the argmax draft, the accepted mask, the confidence and
the entropy of every position. The record stays on the device and is copied to the host once at the end.

:func:`denoise_fused` is the same algorithm for the GPU: raw bf16 logits, one sampling kernel between steps
(:func:`asr.kernels.sample_logits`), the library's acceptance and stopping rules on the kernel's entropies; its own
random numbers (the same distribution). With the eager draw instead of the kernel it equals :func:`denoise`.
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers.cache_utils import Cache
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    EntropyBoundSampler,
    EntropyBoundSamplerConfig,
    LinearTemperatureScheduleLogitsProcessor,
    StableAndConfidentStoppingCriteria,
)

from .transcript import StepTrace

STARTS = ("noise", "ctc")
DRAWS = ("exact", "cdf")  # how sample() draws each position's token (DenoiseOptions.draw)


def check_ctc_weight(weight: float) -> float:
    """``weight`` for a joint reading with the CTC head (:func:`fuse_ctc`), if it is a finite number >= 0."""
    if not 0 <= weight < float("inf"):
        raise ValueError(f"ctc_weight must be a finite number >= 0, got {weight!r}")
    return weight


@dataclass(frozen=True)
class DenoiseOptions:
    """Sampling settings; the defaults are DiffusionGemma's, except ``steps`` (16, the adapter's default)."""

    steps: int = 16
    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    early_stop: bool = True  # stop once the draft is stable and confident (as generate() does)
    # The first canvas: "noise" (uniform random tokens, as generate()), or, for models with an aligned canvas, "ctc":
    # the CTC head's best path laid out as the canvas is trained (each emitted token at its first slot, pad elsewhere),
    # which the denoiser then refines.
    start: str = "noise"
    # For models with an aligned canvas: > 0 reads the final canvas jointly with the CTC head, argmax over
    # log softmax(last step's logits) + ctc_weight * log softmax(CTC head) per position (fuse_ctc); 0: the last
    # step's argmax, as generate(); None: the model's own default (SpeechModel.ctc_weight, read by Pipeline).
    ctc_weight: float | None = None
    # For models that ship a word lexicon (mini): True reads the joint canvas (ctc_weight > 0) with it
    # (lexicon_search: a CTC prefix beam search over the joint log-probabilities, every word spelled from the
    # lexicon or paying its out-of-lexicon score); False: per-position argmax; None: the model's own setting.
    lexicon: bool | None = None
    # How each position's token is drawn from softmax(scaled logits): "exact" as generate() (one exponential per
    # vocabulary entry: its random numbers, so its canvas for a seed), "cdf" one uniform number per position and the
    # inverse of the cumulative distribution (the same distribution, other random numbers; far fewer of them, which
    # on the CPU is most of the sampler's time); None: the pipeline's choice (Pipeline.draw). The fused loop
    # (denoise_fused) draws with its own kernel either way.
    draw: str | None = None

    def __post_init__(self):
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be an integer from 1 to 1000, got {self.steps!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if self.draw is not None and self.draw not in DRAWS:
            raise ValueError(f"draw must be one of {DRAWS} or None, got {self.draw!r}")
        if not 0 <= self.t_min < self.t_max:
            raise ValueError(f"need 0 <= t_min < t_max, got {self.t_min}, {self.t_max}")
        if self.ctc_weight is not None:
            check_ctc_weight(self.ctc_weight)


@dataclass
class DenoiseResult:
    tokens: torch.Tensor  # (B, canvas) the final argmax canvas
    steps_run: int
    trace: list[StepTrace] | None  # one per batch row, on the host
    logits: torch.Tensor | None = None  # (B, canvas, vocab) each row's last logits (before temperature), if kept


StepFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def decoder_inputs(
    backbone, cache: Cache, prompt_length: int, batch_size: int, canvas_length: int | None = None
) -> tuple[dict, torch.Tensor]:
    """The decoder's attention-mask mapping and position ids for a canvas (of ``canvas_length`` positions, default
    the model's) that follows a prefilled prompt of ``prompt_length`` tokens (as ``generate()`` builds them):
    ``(mask_mapping, positions)``."""
    canvas_length = canvas_length or backbone.config.canvas_length
    device = backbone.device
    positions = torch.arange(prompt_length, prompt_length + canvas_length, dtype=torch.int32, device=device)[None]
    mask_mapping = backbone.model.decoder.create_diffusion_decoder_attention_mask(
        config=backbone.config,
        inputs_embeds=torch.empty((batch_size, canvas_length, 1), device=device),
        past_key_values=cache,
        decoder_attention_mask=torch.ones((batch_size, prompt_length + canvas_length), dtype=torch.bool, device=device),
    )
    return mask_mapping, positions


def eager_step(backbone, cache: Cache, prompt_length: int, batch_size: int, canvas_length: int | None = None) -> StepFn:
    """The decoder forward over the prefilled prompt ``cache``: ``(canvas, self_conditioning) -> logits``."""
    mask_mapping, positions = decoder_inputs(backbone, cache, prompt_length, batch_size, canvas_length)

    def step(canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        return backbone(
            decoder_input_ids=canvas,
            self_conditioning_logits=self_conditioning,
            decoder_attention_mask=mask_mapping,
            past_key_values=cache,
            decoder_position_ids=positions,
        ).logits

    return step


@torch.no_grad()
def denoise(
    backbone,
    cache: Cache,
    prompt_length: int,
    batch_size: int,
    options: DenoiseOptions = DenoiseOptions(),
    generator: torch.Generator | None = None,
    record: bool = True,
    step: StepFn | None = None,
    canvas_length: int | None = None,
    initial: torch.Tensor | None = None,
    keep_logits: bool = False,
) -> DenoiseResult:
    """Denoise one canvas per batch row, attending to the prefilled prompt ``cache`` of ``prompt_length`` tokens.

    ``step`` runs the decoder (default :func:`eager_step`; :mod:`asr.fast` passes a CUDA-graph replay).
    ``canvas_length``: the canvas's positions (default the model's ``config.canvas_length``; ``step`` must match).
    ``initial``: the first canvas (batch, canvas_length) instead of uniform random tokens (``DenoiseOptions.start``).
    ``keep_logits``: return each row's last logits (``DenoiseResult.logits``; one more full-vocabulary tensor).
    """
    config = backbone.config
    vocab, canvas_length = config.text_config.vocab_size, canvas_length or config.canvas_length
    device = backbone.device
    step = step or eager_step(backbone, cache, prompt_length, batch_size, canvas_length)
    sampler = EntropyBoundSampler(
        EntropyBoundSamplerConfig(entropy_bound=options.entropy_bound), canvas_length, vocab, options.steps
    )
    temperature = LinearTemperatureScheduleLogitsProcessor(options.t_min, options.t_max, options.steps)
    # One stopping rule per batch row (each keeps its own row's history), so that its entropy is computed a row
    # at a time (see _accept_by_row).
    stoppers = (
        [StableAndConfidentStoppingCriteria(options.stability_threshold, options.confidence_threshold)
         for _ in range(batch_size)]
        if options.early_stop
        else None
    )  # fmt: skip
    canvas = first_canvas(initial, batch_size, canvas_length, vocab, device, generator)
    argmax = canvas
    self_conditioning = None
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    rec = _Recorder(options.steps, batch_size, canvas_length, device) if record else None
    embed_dtype = backbone.model.decoder.embed_tokens.weight.dtype

    steps_run = 0
    last_logits = None
    for remaining in range(options.steps, 0, -1):
        # Full-vocabulary tensors (batch x canvas x 262144) dominate the memory of a step: each is dropped as soon
        # as it has served (the previous step's logits too, unless rows that have stopped need them), and the
        # probabilities (sample) and the library's entropies (sampler, stopping rule) are computed a row at a time.
        any_finished = stoppers is not None and bool(finished.any())  # waited for at the previous step's end
        logits = step(canvas, self_conditioning)
        if keep_logits:  # rows that stopped earlier keep the logits of their last step
            last_logits = torch.where(finished[:, None, None], last_logits, logits) if any_finished else logits
        if not any_finished:
            self_conditioning = None
        scaled = temperature(None, logits, cur_step=remaining)
        del logits
        sampled, confidence, entropy = sample(scaled, generator, record=rec is not None, draw=options.draw or "exact")
        new_argmax = scaled.argmax(dim=-1)
        accepted_canvas, accepted = _accept_by_row(sampler, canvas, sampled, scaled, remaining)
        noise = torch.randint(0, vocab, (batch_size, canvas_length), device=device, generator=generator)
        new_canvas = torch.where(accepted, accepted_canvas, noise)
        if rec is not None:
            rec.put(steps_run, temperature_at(options, remaining), canvas, sampled, new_argmax, accepted, confidence,
                    entropy)  # fmt: skip
        if stoppers is not None:
            if any_finished:  # rows that stopped earlier keep their result (as in generate())
                new_argmax = torch.where(finished[:, None], argmax, new_argmax)
                new_canvas = torch.where(finished[:, None], canvas, new_canvas)
                scaled = torch.where(finished[:, None, None], self_conditioning, scaled)
            finished |= torch.cat([stop(new_argmax[b : b + 1], scaled[b : b + 1]) for b, stop in enumerate(stoppers)])
        canvas, argmax = new_canvas, new_argmax
        self_conditioning = scaled.to(embed_dtype)
        steps_run += 1
        if stoppers is not None and bool(finished.all()):
            break
    trace = rec.to_host(steps_run) if rec is not None else None
    return DenoiseResult(tokens=argmax, steps_run=steps_run, trace=trace, logits=last_logits)


def first_canvas(
    initial: torch.Tensor | None, batch_size: int, length: int, vocab: int, device, generator: torch.Generator | None
) -> torch.Tensor:
    """``initial`` (checked and moved), or uniform random tokens as ``generate()`` starts."""
    if initial is None:
        return torch.randint(0, vocab, (batch_size, length), device=device, generator=generator)
    if initial.shape != (batch_size, length):
        raise ValueError(f"initial canvas of shape {tuple(initial.shape)}, need {(batch_size, length)}")
    return initial.to(device=device, dtype=torch.long)


def temperature_at(options: DenoiseOptions, remaining: int) -> float:
    """The temperature of the step with ``remaining`` steps left (``LinearTemperatureScheduleLogitsProcessor``'s)."""
    return options.t_min + (options.t_max - options.t_min) * (remaining / options.steps)


# --- the fused loop ----------------------------------------------------------------------------------------------
# The same algorithm as denoise(), on raw logits: one kernel (asr.kernels.sample_logits) replaces the ~30 eager
# full-vocabulary passes between two steps, and the self-conditioning input is the kernel's probabilities in the
# embedding dtype instead of float32 logits. The library's acceptance and stopping rules run on the kernel's
# entropies (entropy_bound_accept, StableAndConfident below; tests compare both with the library's classes).


@dataclass
class Draw:
    """One step's draw from raw logits, each (batch, canvas): the sampled and argmax tokens (int64), and the entropy
    (nats) and top probability of every position's distribution (float32)."""

    sampled: torch.Tensor
    argmax: torch.Tensor
    entropy: torch.Tensor
    confidence: torch.Tensor


def draw_torch(
    logits: torch.Tensor, temperature: float, softcap: float | None, probs: torch.Tensor,
    generator: torch.Generator | None,
) -> Draw:  # fmt: skip
    """:func:`asr.kernels.sample_logits` in eager PyTorch (its reference, and the path without the kernel): the
    model's softcapping in float32, the temperature, :func:`sample`'s draw, ``Categorical``'s entropy, and
    ``softmax(scaled.to(probs.dtype))`` written into ``probs`` (which may be ``logits``)."""
    scaled = logits.float()
    if softcap is not None:
        scaled = torch.tanh(scaled / softcap) * softcap
    scaled = scaled / temperature
    sampled, confidence, _ = sample(scaled, generator)
    entropy = torch.cat([torch.distributions.Categorical(logits=row).entropy()[None] for row in scaled])
    argmax = scaled.argmax(dim=-1)
    for b in range(len(scaled)):  # a row at a time: one float32 softmax of a row, not the batch's
        probs[b] = torch.softmax(scaled[b].to(probs.dtype), dim=-1, dtype=torch.float32)
    return Draw(sampled, argmax, entropy, confidence)


def entropy_bound_accept(entropy: torch.Tensor, bound: float) -> torch.Tensor:
    """``EntropyBoundSampler.accept_canvas``'s rule on given entropies (batch, canvas): accept the lowest-entropy
    positions while the sum of their entropies less the largest stays <= ``bound``. Returns the accepted mask."""
    ordered, order = torch.sort(entropy, dim=-1, descending=False)
    selected = torch.cumsum(ordered, dim=-1) - ordered <= bound
    return torch.scatter(torch.zeros_like(selected), dim=-1, index=order, src=selected)


class StableAndConfident:
    """``StableAndConfidentStoppingCriteria`` on given entropies: a row stops once its argmax canvas has not
    changed for ``stability`` steps and the mean entropy of its positions is below ``confidence``."""

    def __init__(self, stability: int, confidence: float):
        self.stability, self.confidence = stability, confidence
        self.history: torch.Tensor | None = None

    def __call__(self, argmax: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
        if self.stability == 0:
            stable = torch.ones(len(argmax), dtype=torch.bool, device=argmax.device)
        else:
            if self.history is None:
                self.history = torch.full((self.stability, *argmax.shape), -1, dtype=argmax.dtype, device=argmax.device)
            stable = (self.history == argmax[None]).all(dim=-1).all(dim=0)
            self.history = torch.cat([self.history[1:], argmax[None]])
        return stable & (entropy.mean(dim=-1) < self.confidence)


FusedStepFn = Callable[[torch.Tensor, bool], torch.Tensor]


@torch.no_grad()
def denoise_fused(
    backbone,
    step: FusedStepFn,
    batch_size: int,
    options: DenoiseOptions = DenoiseOptions(),
    generator: torch.Generator | None = None,
    record: bool = True,
    canvas_length: int | None = None,
    initial: torch.Tensor | None = None,
    use_kernel: bool | None = None,
) -> DenoiseResult:
    """:func:`denoise` on raw logits, for the GPU. ``step(canvas, conditioned)`` runs the decoder and returns its
    (batch, canvas, vocab) lm_head output before softcapping, in the embedding dtype, in a buffer the step reads
    again at its next call as the self-conditioning probabilities (``conditioned``: False at the first step); the
    loop overwrites it with them (``asr.fast.FusedStepRunner`` is such a step).

    ``use_kernel`` (default: on CUDA) draws with :func:`asr.kernels.sample_logits` (Philox random numbers, so other
    tokens than :func:`denoise` for the same seed; the same distribution); otherwise :func:`draw_torch`, which
    consumes the generator as :func:`denoise` does: then the result and the record equal :func:`denoise`'s
    (tests/test_fast.py), the record's entropies to float rounding. A kernel that fails falls back to it."""
    config = backbone.config
    vocab, canvas_length = config.text_config.vocab_size, canvas_length or config.canvas_length
    device = backbone.device
    softcap = config.text_config.final_logit_softcapping
    use_kernel = device.type == "cuda" if use_kernel is None else use_kernel
    canvas = first_canvas(initial, batch_size, canvas_length, vocab, device, generator)
    argmax = canvas
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    stopping = None
    if options.early_stop:
        stopping = StableAndConfident(options.stability_threshold, options.confidence_threshold)
    rec = _Recorder(options.steps, batch_size, canvas_length, device) if record else None
    steps_run = 0
    for remaining in range(options.steps, 0, -1):
        logits = step(canvas, steps_run > 0)
        draw = _draw(logits, temperature_at(options, remaining), softcap, generator, use_kernel)
        accepted = entropy_bound_accept(draw.entropy, options.entropy_bound)
        noise = torch.randint(0, vocab, (batch_size, canvas_length), device=device, generator=generator)
        new_canvas = torch.where(accepted, draw.sampled, noise)
        new_argmax = draw.argmax
        if rec is not None:
            rec.put(steps_run, temperature_at(options, remaining), canvas, draw.sampled, new_argmax, accepted,
                    draw.confidence, draw.entropy)  # fmt: skip
        if stopping is not None:  # rows that stopped earlier keep their result (as in generate())
            new_argmax = torch.where(finished[:, None], argmax, new_argmax)
            new_canvas = torch.where(finished[:, None], canvas, new_canvas)
            finished |= stopping(new_argmax, draw.entropy)
        canvas, argmax = new_canvas, new_argmax
        steps_run += 1
        if stopping is not None and bool(finished.all()):
            break
    trace = rec.to_host(steps_run) if rec is not None else None
    return DenoiseResult(tokens=argmax, steps_run=steps_run, trace=trace)


def _draw(logits, temperature, softcap, generator, use_kernel: bool) -> Draw:
    """The step's draw, the probabilities written over ``logits``: by the kernel, or :func:`draw_torch`."""
    if not use_kernel:
        return draw_torch(logits, temperature, softcap, logits, generator)
    from . import kernels  # triton: imported only where the kernel runs

    seed_device = generator.device if generator is not None else logits.device
    seed = torch.randint(0, 2**62, (1,), device=seed_device, generator=generator).to(logits.device)
    return kernels.guarded(
        "sampling",
        lambda: kernels.sample_logits(logits, temperature, softcap, logits, seed=seed),
        lambda: draw_torch(logits, temperature, softcap, logits, generator),
    )


def fuse_ctc(logits: torch.Tensor, ctc_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """Joint reading of an aligned canvas (``DenoiseOptions.ctc_weight``): per position, the argmax of
    ``log_softmax(logits) + weight * log_softmax(ctc_logits)``, where ``logits`` are the denoiser's last (B, canvas,
    vocab) and ``ctc_logits`` the CTC head's over the same slots. As CTC/attention joint decoding, but per position:
    canvas position i is audio slot i. Session 12's ``mini``, 8 steps: WER 54.8 -> 51.4 % on real speech, 32.6 ->
    29.8 % on held-out Kokoro voices at weight 2 (train/results/cpu-x4 section 7)."""
    return _joint_scores(logits, ctc_logits, weight).argmax(dim=-1)


def _joint_scores(logits: torch.Tensor, ctc_logits: torch.Tensor, weight: float) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1) + weight * torch.log_softmax(ctc_logits.float(), dim=-1)


def joint_log_probs(logits: torch.Tensor, ctc_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """Per position, ``log_softmax(log_softmax(logits) + weight * log_softmax(ctc_logits))``: :func:`fuse_ctc`'s
    joint scores, normalised to log-probabilities over the vocabulary (what :func:`lexicon_search` reads)."""
    return torch.log_softmax(_joint_scores(logits, ctc_logits, weight), dim=-1)


@dataclass(frozen=True)
class Lexicon:
    """Words with unigram log-probabilities, optional word pairs, and the weights of :func:`lexicon_search`.

    A word's score is ``alpha * log P(word | previous word) + beta``; a word that is not in the lexicon scores ``oov``
    (charged once, as soon as its spelling is no prefix of any lexicon word) plus ``beta``. After a word that starts
    some listed pair, ``P(word | previous) = unigram_weight * P(word) + (1 - unigram_weight) * P_pairs(word |
    previous)``, the second term the pair's share of that word's listed pairs; elsewhere ``P(word)``. ``beam``
    prefixes are kept per audio slot, each extended by at most ``top_k`` tokens, those with a log-probability above
    ``min_log_prob``."""

    words: tuple[str, ...]  # sorted: a spelling's prefixes are found by bisection
    log_probs: dict[str, float]
    # these defaults: the best of a grid on 100 Kokoro clips mini never heard, with train/make_lexicon.py's general
    # English counts and 19 000 word pairs (train/results/cpu-x4 section 16); a broad optimum: within 0.6 points for
    # alpha 1-1.5, beta 3-9, unigram_weight 0.2-0.5, oov -30 to -60, except alpha 1 with beta 7-9
    alpha: float = 1.25
    beta: float = 7.0
    oov: float = -40.0
    beam: int = 12
    top_k: int = 8
    min_log_prob: float = -12.0
    pairs: dict[str, dict[str, float]] = field(default_factory=dict)  # previous -> {word: P_pairs(word | previous)}
    unigram_weight: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.unigram_weight <= 1:
            raise ValueError(f"unigram_weight must be in (0, 1], got {self.unigram_weight}")

    @classmethod
    def read(cls, path: str | Path, **weights: float) -> Lexicon:
        """A file of ``word<TAB>count`` lines and, optionally, ``previous word<TAB>count`` lines (gzip-compressed
        when it ends in ``.gz``; ``train/make_lexicon.py`` writes one); ``weights`` set the other fields."""
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        counts: dict[str, int] = {}
        pair_counts: dict[str, dict[str, int]] = {}
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                key, _, count = line.rstrip("\n").partition("\t")
                words = key.split(" ")
                if not all(words) or len(words) > 2 or not count.isdigit() or int(count) < 1:
                    raise ValueError(f"{path}:{number}: expected 'word<TAB>count' or 'word word<TAB>count' with a "
                                     "count >= 1")  # fmt: skip
                if len(words) == 1:
                    counts[key] = counts.get(key, 0) + int(count)
                else:
                    after = pair_counts.setdefault(words[0], {})
                    after[words[1]] = after.get(words[1], 0) + int(count)
        if not counts:
            raise ValueError(f"{path} holds no words")
        total = sum(counts.values())
        log_probs = {w: math.log(c / total) for w, c in counts.items()}
        pairs = {}
        for previous, after in pair_counts.items():  # each pair's share of the pairs listed after its first word
            listed = sum(after.values())
            pairs[previous] = {w: c / listed for w, c in after.items()}
        return cls(tuple(sorted(counts)), log_probs, pairs=pairs, **weights)

    def is_prefix(self, spelling: str) -> bool:
        """Whether some lexicon word starts with ``spelling``."""
        i = bisect.bisect_left(self.words, spelling)
        return i < len(self.words) and self.words[i].startswith(spelling)

    def word_score(self, word: str, previous: str = "") -> float:
        """``alpha * log P(word | previous)`` for a lexicon word, else ``oov`` (both without ``beta``); ``previous``
        is the word before it ("" at the start)."""
        logp = self.log_probs.get(word)
        if logp is None:
            return self.oov
        after = self.pairs.get(previous)
        if after is None:
            return self.alpha * logp
        mixed = self.unigram_weight * math.exp(logp) + (1 - self.unigram_weight) * after.get(word, 0.0)
        return self.alpha * math.log(mixed)


def token_pieces(tokenizer, vocab_size: int) -> list[tuple[bool, str] | None]:
    """Per token id, (whether it starts a new word, its letters), from the tokenizer's own decoding of the id alone
    (a leading space starts a word, as byte-level BPE's ``Ġ`` and SentencePiece's ``▁`` decode); None for ids
    without text (special tokens)."""
    out: list[tuple[bool, str] | None] = []
    for i in range(vocab_size):
        text = tokenizer.decode([i], skip_special_tokens=True)
        out.append((text[:1].isspace(), text.strip()) if text.strip() else None)
    return out


def lexicon_search(
    log_probs: torch.Tensor, lexicon: Lexicon, pieces: list[tuple[bool, str] | None], blank: int
) -> list[int]:
    """Read one aligned canvas with a word lexicon: a CTC prefix beam search over ``log_probs`` (slots, vocab; e.g.
    :func:`joint_log_probs`) in which each word adds :meth:`Lexicon.word_score` plus ``beta`` (CTC decoding with a
    lexicon and a unigram language model, as in speech toolkits' beam decoders). Returns the best transcript as an
    aligned canvas: each token at the slot where the most probable single CTC path of that transcript emits it
    (:func:`ctc_alignment`), ``blank`` elsewhere, so that a greedy CTC reading of it (:func:`ctc_collapse`) gives the
    transcript's tokens and word timings follow from the slots.
    ``pieces`` is :func:`token_pieces`' list; ids without a piece are never emitted."""
    lp = log_probs.detach().float().cpu().numpy()
    slots, vocab = lp.shape
    if len(pieces) < vocab:
        raise ValueError(f"{len(pieces)} token pieces for a vocabulary of {vocab}")
    never = np.array([p is None for p in pieces[:vocab]])
    never[blank] = True
    scores = np.where(never[None, :], -np.inf, lp)
    k = min(lexicon.top_k, vocab - 1)
    candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    # per prefix (a tuple of ids): [log P(ending in blank), log P(ending in its last id)], and, fixed when the prefix
    # is made: (language score so far, the spelling of its unfinished word, whether that was charged oov, the word
    # before it)
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, -math.inf]}
    made: dict[tuple[int, ...], tuple[float, str, bool, str]] = {(): (0.0, "", False, "")}

    def extend(prefix: tuple[int, ...], token: int) -> tuple[float, str, bool, str]:
        score, spelling, charged, previous = made[prefix]
        starts, piece = pieces[token]
        if starts and spelling:  # the unfinished word ends here
            score += (0.0 if charged else lexicon.word_score(spelling, previous)) + lexicon.beta
            spelling, charged, previous = piece, False, spelling
        else:
            spelling += piece
        if not charged and not lexicon.is_prefix(spelling):
            score, charged = score + lexicon.oov, True
        return score, spelling, charged, previous

    for t in range(slots):
        row = lp[t]
        ids = [int(c) for c in candidates[t] if scores[t, c] > lexicon.min_log_prob]
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_last) in beams.items():
            total = np.logaddexp(p_blank, p_last)
            entry = nxt.setdefault(prefix, [-math.inf, -math.inf])
            entry[0] = np.logaddexp(entry[0], total + row[blank])
            last = prefix[-1] if prefix else None
            for c in ids:
                if c == last:  # the same id again: the same token continues, or (after a blank) a new one
                    entry[1] = np.logaddexp(entry[1], p_last + row[c])
                    source = p_blank + row[c]
                else:
                    source = total + row[c]
                if source == -math.inf:  # (the same id right after itself, no blank between: no new token)
                    continue
                longer = (*prefix, c)
                if longer not in made:
                    made[longer] = extend(prefix, c)
                other = nxt.setdefault(longer, [-math.inf, -math.inf])
                other[1] = np.logaddexp(other[1], source)
        ranked = sorted(nxt.items(), key=lambda kv: np.logaddexp(*kv[1]) + made[kv[0]][0], reverse=True)
        beams = dict(ranked[: lexicon.beam])

    def final(prefix: tuple[int, ...]) -> float:
        score, spelling, charged, previous = made[prefix]
        if spelling:
            score += (0.0 if charged else lexicon.word_score(spelling, previous)) + lexicon.beta
        return float(np.logaddexp(*beams[prefix])) + score

    best = list(max(beams, key=final))
    canvas = [blank] * slots
    if best:  # each token where the most probable single path of this transcript emits it
        where = ctc_alignment(log_probs[None], [best], torch.tensor([slots]), blank)[0]
        for token, slot in zip(best, where, strict=True):
            canvas[slot] = token
    return canvas


def sample(
    scaled: torch.Tensor, generator: torch.Generator | None, record: bool = True, draw: str = "exact"
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One token per position from ``softmax(scaled)`` (batch, canvas, vocab): ``(sampled, confidence, entropy)``,
    the last two (the record's: the top probability, and the entropy in nats) ``None`` unless ``record``.

    ``draw="exact"``: the same draw as ``torch.multinomial(softmax(scaled, float32).view(-1, vocab), 1, generator)``
    (what ``generate()`` calls), which for one sample is ``argmax(p / q)`` with ``q ~ Exp(1)`` drawn by one
    ``exponential_`` over the whole ``(positions, vocab)`` tensor (torch's ``multinomial_out``): the same random
    numbers in the same order, so the same tokens (tests/test_decoding.py compares with ``generate()``).
    ``draw="cdf"``: one uniform ``u`` per position and the first token whose cumulative probability (float64) exceeds
    ``u`` times the total: the same distribution from ``1 / vocab`` as many random numbers (on the CPU, where
    ``exponential_`` fills ~60 M entries a second on one thread, ~7 ms less per step for 112 positions of a
    4096-entry vocabulary). Done here, a batch row at a time, the float32 probabilities never exist for the whole
    batch at once (at batch 16 on the real model, 3.2 GB besides ``q``'s 3.2 GB), and ``multinomial``'s input checks
    (three more passes over them and two host synchronisations) are skipped: softmax output is a valid
    distribution."""
    if draw not in DRAWS:
        raise ValueError(f"draw must be one of {DRAWS}, got {draw!r}")
    batch, length, vocab = scaled.shape
    if draw == "exact":
        q = torch.empty((batch, length, vocab), dtype=torch.float32, device=scaled.device)
        q.exponential_(generator=generator)
    else:
        u = torch.rand((batch, length, 1), generator=generator, dtype=torch.float64, device=scaled.device)
    sampled = torch.empty((batch, length), dtype=torch.long, device=scaled.device)
    confidence = entropy = None
    if record:
        confidence = torch.empty((batch, length), dtype=torch.float32, device=scaled.device)
        entropy = torch.empty_like(confidence)
    for b in range(batch):
        x = scaled[b]
        p = torch.softmax(x, dim=-1, dtype=torch.float32)
        if draw == "exact":
            sampled[b] = torch.div(p, q[b], out=q[b]).argmax(dim=-1)
        else:
            cdf = p.cumsum(dim=-1, dtype=torch.float64)
            sampled[b] = torch.searchsorted(cdf, u[b] * cdf[:, -1:], right=True)[:, 0].clamp_(max=vocab - 1)
        if record:  # H = logsumexp(x) - sum(softmax(x) x), from the probabilities at hand, in float32; -inf logits
            confidence[b] = p.amax(dim=-1)  # clamped to the lowest float first, as Categorical.entropy() does
            xf = x.float().clamp(min=torch.finfo(torch.float32).min)
            entropy[b] = torch.logsumexp(xf, dim=-1) - (p * xf).sum(dim=-1)
    return sampled, confidence, entropy


def _accept_by_row(
    sampler: EntropyBoundSampler, canvas: torch.Tensor, sampled: torch.Tensor, scaled: torch.Tensor, remaining: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sampler.accept_canvas`` a batch row at a time: ``(accepted canvas, accepted mask)``.

    Its ``Categorical(logits).entropy()`` makes about three temporaries of the logits' size (batch x canvas x
    vocabulary), which a row at a time are ``1 / batch`` as large. Acceptance is row-wise, so the result is the
    whole batch's. The stopping rule computes its entropy a row at a time for the same reason.
    """
    accepted_canvas, accepted = [], []
    for b in range(len(canvas)):
        row = slice(b, b + 1)
        accepted_canvas.append(sampler.accept_canvas(canvas[row], sampled[row], scaled[row], remaining))
        accepted.append(sampler.accepted_token_mask)
    return torch.cat(accepted_canvas), torch.cat(accepted)


class _Recorder:
    """Per-step buffers kept on the device; copied to the host once."""

    def __init__(self, steps: int, batch: int, length: int, device: torch.device):
        shape = (steps, batch, length)
        self.temperature = torch.zeros(steps)
        self.canvas = torch.zeros(shape, dtype=torch.int32, device=device)
        self.sampled = torch.zeros(shape, dtype=torch.int32, device=device)
        self.argmax = torch.zeros(shape, dtype=torch.int32, device=device)
        self.accepted = torch.zeros(shape, dtype=torch.bool, device=device)
        self.confidence = torch.zeros(shape, dtype=torch.float16, device=device)
        self.entropy = torch.zeros(shape, dtype=torch.float16, device=device)

    def put(self, i, temperature, canvas, sampled, argmax, accepted, confidence, entropy) -> None:
        self.temperature[i] = temperature
        self.canvas[i] = canvas
        self.sampled[i] = sampled
        self.argmax[i] = argmax
        self.accepted[i] = accepted
        self.confidence[i] = confidence
        self.entropy[i] = entropy

    def to_host(self, steps: int) -> list[StepTrace]:
        arrays = {
            name: getattr(self, name)[:steps].cpu().numpy()
            for name in ("canvas", "sampled", "argmax", "accepted", "confidence", "entropy")
        }
        temperature = self.temperature[:steps].numpy()
        batch = arrays["canvas"].shape[1]
        return [StepTrace(temperature=temperature, **{k: v[:, b] for k, v in arrays.items()}) for b in range(batch)]


def ctc_alignment(
    log_probs: torch.Tensor, targets: list[list[int]], lengths: torch.Tensor, blank: int
) -> list[list[int]]:
    """The best single CTC path (Viterbi) of each row's ``targets`` through the first ``lengths[b]`` slots of
    ``log_probs`` (B, T, V): for every target id, the slot where that path emits it (the first slot of its run).

    A row with no path (more ids, with a blank between repeated ones, than slots) gets its ids spread evenly.
    """
    B, T, _ = log_probs.shape
    device = log_probs.device
    n = torch.tensor([len(t) for t in targets], device=device)
    S = 2 * int(n.max()) + 1
    ext = torch.full((B, S), blank, dtype=torch.long, device=device)  # blank, id, blank, id, ..., blank
    for b, t in enumerate(targets):
        ext[b, 1 : 2 * len(t) : 2] = torch.tensor(t, dtype=torch.long, device=device)
    valid = torch.arange(S, device=device)[None] < (2 * n + 1)[:, None]
    skip = torch.zeros((B, S), dtype=torch.bool, device=device)  # s - 2 -> s: between two different ids
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    emit = log_probs.float().gather(2, ext[:, None, :].expand(B, T, S))  # (B, T, S)
    neg = torch.tensor(float("-inf"), device=device)
    alpha = torch.where(valid & (torch.arange(S, device=device) < 2)[None], emit[:, 0], neg)
    back = torch.zeros((T, B, S), dtype=torch.long, device=device)  # 0 stay, 1 from s - 1, 2 from s - 2
    lengths = lengths.to(device)
    for t in range(1, T):
        one = torch.cat([neg.expand(B, 1), alpha[:, :-1]], dim=1)
        two = torch.where(skip, torch.cat([neg.expand(B, 2), alpha[:, :-2]], dim=1), neg)
        best, arg = torch.stack([alpha, one, two], dim=-1).max(dim=-1)
        active = (t < lengths)[:, None]
        alpha = torch.where(active, torch.where(valid, best + emit[:, t], neg), alpha)
        back[t] = torch.where(active, arg, 0)
    rows = torch.arange(B, device=device)
    last, before = 2 * n, (2 * n - 1).clamp(min=0)
    state = torch.where(alpha[rows, before] > alpha[rows, last], before, last)
    found = alpha[rows, state] > neg
    path = torch.empty((T, B), dtype=torch.long, device=device)
    for t in range(T - 1, -1, -1):
        path[t] = state
        state = state - back[t, rows, state]
    path = path.T.tolist()
    out = []
    for b, t in enumerate(targets):
        if not bool(found[b]):
            out.append([int(i * int(lengths[b]) / len(t)) for i in range(len(t))])
            continue
        first: dict[int, int] = {}
        for slot, s in enumerate(path[b][: int(lengths[b])]):
            if s % 2 == 1:
                first.setdefault(s // 2, slot)
        out.append([first[j] for j in range(len(t))])
    return out


def ctc_canvas(best_path: torch.Tensor, blank: int) -> torch.Tensor:
    """An aligned canvas from CTC best paths (batch, slots): each emitted token at the first slot of its run, blank
    elsewhere (the layout ``asr.train.aligned_batch`` trains the denoiser on)."""
    first = torch.ones_like(best_path, dtype=torch.bool)
    first[:, 1:] = best_path[:, 1:] != best_path[:, :-1]
    return torch.where(first, best_path, torch.full_like(best_path, blank))


def ctc_collapse(ids: list[int], blank: int) -> list[int]:
    """Greedy CTC decoding of a frame-wise argmax: merge repeated ids, then drop blanks."""
    return [t for t, _ in itertools.groupby(ids) if t != blank]


def ctc_word_slots(ids: list[int], blank: int, decode: Callable[[list[int]], str]) -> list[tuple[str, int, int]]:
    """The words of a frame-wise (one id per audio slot) CTC reading, each with the first and last slot where one
    of its tokens is emitted: ``[(word, first_slot, last_slot), ...]``. ``decode`` turns ids into text; a token
    belongs to the word that the text of the tokens up to it ends in (so byte-level and SentencePiece tokenizers
    work alike). Tokens without a letter or digit (punctuation, often emitted late, in the pause after a word) do
    not move a word's end."""
    emitted, slot = [], 0  # (slot, id) of each emitted token: the first slot of a run of one id, blanks dropped
    for t, run in itertools.groupby(ids):
        if t != blank:
            emitted.append((slot, t))
        slot += sum(1 for _ in run)
    tokens = [t for _, t in emitted]
    words = decode(tokens).split()
    slots: list[list[int]] = [[] for _ in words]
    before = ""
    for k, (slot, _) in enumerate(emitted):
        text = decode(tokens[: k + 1])
        index = len(text.split()) - 1
        piece = text[len(before) :] if text.startswith(before) else text
        before = text
        if 0 <= index < len(words) and (not slots[index] or any(c.isalnum() for c in piece)):
            slots[index].append(slot)
    return [(w, min(s), max(s)) for w, s in zip(words, slots, strict=True) if s]


def trim_tokens(tokens: list[int], eos_ids: list[int], pad_id: int) -> list[int]:
    """Tokens up to (not including) the first end-of-sequence id, without padding."""
    out = []
    for t in tokens:
        if t in eos_ids:
            break
        if t != pad_id:
            out.append(t)
    return out
