"""The pipeline: audio -> segments -> features -> prompt cache -> denoised canvases -> :class:`Transcript`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import secrets
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from . import audio as A
from . import fast
from .decoding import (
    DenoiseOptions,
    ctc_canvas,
    ctc_collapse,
    ctc_word_slots,
    denoise,
    fuse_ctc,
    joint_log_probs,
    lexicon_search,
    token_pieces,
    trim_tokens,
)
from .model import WHISPER_FRAME_RATE, SpeechModel
from .transcript import Segment, Timings, Transcript, Word

ProgressFn = Callable[[float, str], None]


def cpu_bf16_default() -> bool:
    """Whether :func:`asr.load` runs a small model on the CPU in bfloat16: where the CPU has native bfloat16
    arithmetic (AVX512-BF16 or AMX) and ``ASR_CPU_BF16`` is not ``0``. On this project's 2-core CPU it takes the
    small model from RTFx 10.8 to 12.1 at 8 steps with the same WER (train/results/cpu-bf16.md)."""
    if os.environ.get("ASR_CPU_BF16", "1") == "0":
        return False
    try:  # a private but long-standing torch op (oneDNN's own check of the CPU's bfloat16 support)
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Pipeline:
    """A loaded model, ready to transcribe. Get one with :func:`asr.load`; safe to share between threads.

    On CUDA the prompt's prefill and the decoder step run as CUDA graphs (:mod:`asr.fast`; the same tokens and
    canvases as eager, ``asr.bench --check`` on an H200) for batches of up to ``graph_max_batch`` windows, or
    ``graph_max_batch_fused`` with the fused loop below. ``cuda_graphs=False`` or ``ASR_CUDA_GRAPHS=0`` turns graphs
    off (e.g. where the weights can move between calls, as on ZeroGPU).

    Where :func:`asr.load` switched the kernels on (CUDA), the canvases are denoised by
    :func:`asr.decoding.denoise_fused`: one sampling kernel between steps, no float32 full-vocabulary tensors; other
    random numbers than the reference loop, the same distribution. On an H200 (bench/RESULTS.md, random weights):
    one 30 s window at 8 steps 0.217 s instead of 0.256 s, 20 windows 1.23 s at a 56.9 GB peak instead of 2.82 s at
    63.9 GB. Not for a joint CTC reading (``ctc_weight > 0``), which needs the last logits: that keeps the reference
    loop.

    ``cpu_bf16=True`` runs the models (encoder, projector, prefill, decoder steps; not the log-mel features) of a
    float32 model on the CPU under ``torch.autocast`` in bfloat16, and the sampler on the bfloat16 logits, as
    ``generate()`` would under the same autocast (tests/test_decoding.py). :func:`asr.load` turns it on for the
    small model where the CPU computes bfloat16 natively (:func:`cpu_bf16_default`).

    ``draw`` is how tokens are drawn where :class:`DenoiseOptions` leave it to the pipeline (``draw=None``):
    ``"exact"`` (generate()'s random numbers) or ``"cdf"`` (one per position; :func:`asr.decoding.sample`).
    :func:`asr.load` picks ``"cdf"`` for a small model on the CPU.

    ``trim_encoder=True`` runs whisper's encoder only over the positions that cover a batch's audio (plus 1 s), not
    the whole 30 s window (:meth:`SpeechModel.embed_audio`'s ``seconds``): an approximation, measured for small
    models only, where :func:`asr.load` turns it on (``ASR_TRIM_ENCODER=0`` turns it off).
    """

    graph_max_batch = 4
    graph_max_batch_fused = 20  # with asr.decoding.denoise_fused (no float32 full-vocabulary tensors)

    @property
    def default_batch_size(self) -> int:
        """Windows denoised together by default: 20 (10 minutes of audio) with the fused loop on CUDA, whose step
        holds no float32 full-vocabulary tensors (an H200: 20 windows in one graphed batch 1.18 s, peak 56.4 GB,
        against 1.31 s as 16 + 4; bench/RESULTS.md), else 16."""
        return 20 if fast.fused_sampling(self.model.backbone) else 16

    def __init__(
        self,
        model: SpeechModel,
        tokenizer,
        feature_extractor,
        name: str,
        device: str,
        cuda_graphs: bool | None = None,
        cpu_bf16: bool = False,
        trim_encoder: bool = False,
        draw: str = "exact",
    ):
        if cpu_bf16 and device != "cpu":
            raise ValueError(f"cpu_bf16 is for device='cpu', not {device!r}")
        self.draw = DenoiseOptions(draw=draw).draw  # checked
        self.cpu_bf16 = cpu_bf16
        self.trim_encoder = trim_encoder
        self.model = model
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.name = name
        self.device = device
        if cuda_graphs is None:
            cuda_graphs = device.startswith("cuda") and os.environ.get("ASR_CUDA_GRAPHS", "1") != "0"
        self.cuda_graphs = cuda_graphs
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        dtype = next(self.model.backbone.parameters()).dtype
        extra = (", cpu_bf16=True" if self.cpu_bf16 else "") + (", trim_encoder=True" if self.trim_encoder else "")
        extra += f", draw={self.draw!r}" if self.draw != "exact" else ""
        return (
            f"Pipeline({self.name!r}, device={self.device!r}, dtype={dtype}{extra}, canvas={self.model.canvas_length})"
        )

    def _models(self) -> contextlib.AbstractContextManager:
        """The context the models run in: bfloat16 autocast with ``cpu_bf16``, else none."""
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.cpu_bf16 else contextlib.nullcontext()

    @property
    def is_random(self) -> bool:
        """True for the tiny random-weight stack (its transcripts are noise)."""
        return "random weights" in self.name

    @property
    def is_small(self) -> bool:
        """True for a small model trained by this project (``asr.load("mini")`` or an ``asr.train`` export)."""
        return "small model trained by this project" in self.name

    def features(self, chunks: list[np.ndarray]) -> torch.Tensor:
        """Log-mel features of 16 kHz chunks, padded to the 30 s window: (B, n_mels, 3000)."""
        out = self.feature_extractor(chunks, sampling_rate=A.SAMPLE_RATE, return_tensors="pt", device=self.device)
        return out.input_features

    def transcribe(
        self,
        audio: A.AudioInput,
        steps: int = 16,
        seed: int | None = None,
        *,
        sample_rate: int | None = None,
        batch_size: int | None = None,
        options: DenoiseOptions | None = None,
        record_steps: bool = True,
        progress: ProgressFn | None = None,
    ) -> Transcript:
        """Transcribe ``audio`` (path, bytes, ``(rate, array)`` pair or 16 kHz array) with ``steps`` denoising steps.

        Long audio is split at pauses into windows of at most 30 s, denoised together in batches of
        ``batch_size`` (default :attr:`default_batch_size`). ``seed`` makes the result reproducible (a random one is
        drawn and recorded when None). Raises :class:`asr.AudioError` for unusable input.
        """
        batch_size = batch_size or self.default_batch_size
        # full sampler settings, when given, win over steps=; refused before any audio is decoded or encoded
        options = self.reading(options or DenoiseOptions(steps=steps))
        seed = secrets.randbits(31) if seed is None else int(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)

        def denoise_batch(wave: np.ndarray, spans: list[A.Span], stages: dict[str, float]) -> list[Segment]:
            return self._transcribe_batch(wave, spans, options, generator, record_steps, stages)

        segments, timings = self._run(audio, sample_rate, batch_size, progress, denoise_batch)
        return Transcript(
            segments=segments, timings=timings, model=self.name, steps=options.steps, seed=seed,
            ctc_weight=options.ctc_weight, lexicon=options.lexicon, draw=options.draw,
        )  # fmt: skip

    def reading(self, options: DenoiseOptions) -> DenoiseOptions:
        """``options`` as :meth:`transcribe` reads with them: what they leave to the model (None) filled in, its
        ``ctc_weight`` (:attr:`SpeechModel.ctc_weight`) and its lexicon where it has one and the reading is joint;
        raises ``ValueError`` for what the model cannot do (``start="ctc"`` or a joint reading without an aligned
        canvas, ``lexicon=True`` without a lexicon or a joint reading)."""
        if options.ctc_weight is None:
            options = dataclasses.replace(options, ctc_weight=self.model.ctc_weight)
        if options.start == "ctc":
            self._require_aligned('start="ctc"')
        if options.ctc_weight > 0:
            self._require_aligned("ctc_weight > 0")
        if options.lexicon is None:
            options = dataclasses.replace(options, lexicon=self.model.lexicon is not None and options.ctc_weight > 0)
        if options.lexicon and (self.model.lexicon is None or options.ctc_weight == 0):
            raise ValueError("lexicon=True needs a model with a lexicon (mini) and a joint reading (ctc_weight > 0)")
        if options.draw is None:
            options = dataclasses.replace(options, draw=self.draw)
        return options

    def transcribe_ctc(
        self,
        audio: A.AudioInput,
        *,
        sample_rate: int | None = None,
        batch_size: int = 16,
        progress: ProgressFn | None = None,
    ) -> Transcript:
        """The greedy transcript of the CTC head (encoder + projector + lm_head, no denoising): a diagnostic of what
        the audio side has learned (the training recipe's third loss trains this head). ``steps`` is 0."""
        segments, timings = self._run(audio, sample_rate, batch_size, progress, self._ctc_batch)
        return Transcript(segments=segments, timings=timings, model=self.name, steps=0)

    def _run(self, audio, sample_rate, batch_size, progress, per_batch) -> tuple[list[Segment], Timings]:
        """The loop both transcribers share: decode ``audio``, split it at pauses into windows of at most 30 s, and
        hand them to ``per_batch(wave, spans, stages)`` ``batch_size`` at a time; time the whole and each stage."""
        started = time.perf_counter()
        stages: dict[str, float] = {}
        t = time.perf_counter()
        wave = A.load_audio(audio, sample_rate=sample_rate)
        spans = A.split_on_silence(wave)
        stages["decode_audio"] = time.perf_counter() - t
        segments: list[Segment] = []
        for first in range(0, len(spans), batch_size):
            batch = spans[first : first + batch_size]
            if progress:
                progress(first / max(1, len(spans)), f"segments {first + 1}-{first + len(batch)} of {len(spans)}")
            segments += per_batch(wave, batch, stages)
        if progress:
            progress(1.0, "done")
        timings = Timings(
            audio_seconds=len(wave) / A.SAMPLE_RATE, wall_seconds=time.perf_counter() - started, stages=stages
        )
        return segments, timings

    def _timed(self, stages: dict[str, float], name: str, fn: Callable):
        """``fn()``, its time (the GPU's work included) added to ``stages[name]``."""
        t = time.perf_counter()
        out = fn()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t
        return out

    @contextlib.contextmanager
    def _audio_embeddings(self, wave: np.ndarray, spans: list[A.Span], stages: dict[str, float]):
        """The audio embeddings of the windows ``spans``, yielded inside the model lock and context (the log-mel
        features are computed before taking the lock: other requests' models can run meanwhile)."""
        feats = self._timed(stages, "features", lambda: self.features([A.cut(wave, s) for s in spans]))
        seconds = max(s.duration for s in spans) if self.trim_encoder else None
        with self._lock, torch.inference_mode(), self._models():
            yield self._timed(
                stages, "encoder+projector", lambda: self.model.embed_audio(feats.to(self.device), seconds=seconds)
            )

    def _transcribe_batch(self, wave, spans, options, generator, record_steps, stages) -> list[Segment]:
        with self._audio_embeddings(wave, spans, stages) as audio_embeds:
            embeds = self.model.prompt_embeddings(audio_embeds)
            backbone = self.model.backbone
            fused = fast.fused_sampling(backbone) and options.ctc_weight == 0  # (no logits kept for a joint reading)
            graphs = self.cuda_graphs and len(spans) <= (self.graph_max_batch_fused if fused else self.graph_max_batch)
            prefill = (lambda: fast.prefill(self.model, embeds)) if graphs else (lambda: self.model.prefill(embeds))
            cache = self._timed(stages, "prefill", prefill)
            if graphs:  # a graph is captured for the model's canvas length
                length = self.model.canvas_length
                run = functools.partial(fast.denoise, backbone, cache, fused=fused)
            else:  # an aligned canvas needs only the positions of the audio's slots (model.CANVASES)
                length = max(self.model.canvas_for(s.duration) for s in spans)
                if fused:
                    run = functools.partial(fast.denoise, backbone, cache, use_graph=False, fused=True,
                                            canvas_length=length)  # fmt: skip
                else:
                    run = functools.partial(denoise, backbone, cache, canvas_length=length)
            initial = None
            if options.start == "ctc":
                initial = self._timed(stages, "ctc", lambda: self._ctc_start(audio_embeds, length))
            result = self._timed(
                stages, "denoise",
                lambda: run(embeds.shape[1], len(spans), options, generator, record=record_steps, initial=initial,
                            keep_logits=options.ctc_weight > 0),
            )  # fmt: skip
            final = result.tokens
            if options.ctc_weight > 0:  # the final canvas read jointly with the CTC head over the same slots

                def read_jointly() -> torch.Tensor:
                    ctc_logits = self.model.ctc_logits(audio_embeds[:, : final.shape[1]])
                    if not options.lexicon:
                        return fuse_ctc(result.logits, ctc_logits, options.ctc_weight)
                    joint = joint_log_probs(result.logits, ctc_logits, options.ctc_weight)
                    pad = self.model.prompt.pad_id
                    rows = [lexicon_search(row, self.model.lexicon, self._pieces, pad) for row in joint]
                    return torch.tensor(rows, dtype=torch.long, device=final.device)

                final = self._timed(stages, "ctc", read_jointly)
        segments = []
        for i, span in enumerate(spans):
            canvas = final[i].tolist()
            tokens = self._content(canvas)
            trace = result.trace[i] if result.trace is not None else None
            words = self._words(canvas, span) if self.model.canvas == "aligned" else []
            text = self._text(tokens)
            joint = canvas if options.ctc_weight > 0 and trace is not None else None  # the visualiser's last row
            segments.append(
                Segment(span.start, span.end, text, tokens=tokens, steps=trace, words=words, final_canvas=joint)
            )
        return segments

    def _ctc_start(self, audio_embeds: torch.Tensor, length: int) -> torch.Tensor:
        """``DenoiseOptions(start="ctc")``'s first canvas: the CTC head's best path as an aligned canvas (pad past the
        audio's slots), ``length`` positions (:meth:`transcribe` has checked that the canvas is aligned)."""
        pad = self.model.prompt.pad_id
        canvas = ctc_canvas(self._ctc_path(audio_embeds), blank=pad)[:, :length]
        return torch.nn.functional.pad(canvas, (0, length - canvas.shape[1]), value=pad)

    def _require_aligned(self, what: str) -> None:
        if self.model.canvas != "aligned":
            raise ValueError(f"{what} needs a model with an aligned canvas (one position per audio slot)")

    def _ctc_path(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """The CTC head's greedy best path: one id per audio slot, (batch, slots)."""
        return self.model.ctc_logits(audio_embeds).argmax(-1)

    def _ctc_batch(self, wave: np.ndarray, spans: list[A.Span], stages: dict[str, float]) -> list[Segment]:
        with self._audio_embeddings(wave, spans, stages) as audio_embeds:
            best = self._timed(stages, "ctc", lambda: self._ctc_path(audio_embeds).tolist())
        segments = []
        for span, row in zip(spans, best, strict=True):
            tokens = ctc_collapse(row, blank=self.model.prompt.pad_id)
            words = self._words(row, span)
            segments.append(Segment(span.start, span.end, self._text(tokens), tokens=tokens, words=words))
        return segments

    def _words(self, slots: list[int], span: A.Span) -> list[Word]:
        """Word timings of a reading with one id per audio slot (an aligned canvas, the CTC head's best path): a
        word runs from the first slot where one of its tokens is emitted to the slot after its last one (a slot is
        ``subsampling`` whisper frames of 20 ms, 0.16 s at x8), within the window."""
        slot_s = self.model.projector.subsampling / WHISPER_FRAME_RATE
        start, end = float(span.start), float(span.end)
        return [
            Word(word, start + first * slot_s, min(end, start + (last + 1) * slot_s))
            for word, first, last in ctc_word_slots(slots, self.model.prompt.pad_id, self._text)
        ]

    def decode(self, canvas: list[int]) -> str:
        """The text of a canvas, without special tokens: packed, the tokens up to the first end-of-sequence id
        without padding; aligned, greedy CTC reading (repeats merged, pads dropped; ``asr.model.CANVASES``)."""
        return self._text(self._content(canvas))

    def _content(self, canvas: list[int]) -> list[int]:
        prompt = self.model.prompt
        if self.model.canvas == "aligned":  # one position per audio slot (model.CANVASES)
            return ctc_collapse(list(canvas), blank=prompt.pad_id)
        return trim_tokens(list(canvas), prompt.eos_ids, prompt.pad_id)

    @functools.cached_property
    def _pieces(self) -> list[tuple[bool, str] | None]:
        """:func:`asr.decoding.token_pieces` of the tokenizer, for the lexicon reading."""
        return token_pieces(self.tokenizer, self.model.backbone.config.text_config.vocab_size)

    def _text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    def token_strings(self, ids: list[int]) -> list[str]:
        """Readable text of each token id (for the visualiser): special tokens by name, bytes decoded."""
        return [self.tokenizer.decode([i], skip_special_tokens=False) for i in ids]
