"""Speed benchmark of the project's own transcription path, with baselines, as a table and as JSON records.

    python -m asr.bench                                  # tiny random stack on the CPU (regression tracking)
    python -m asr.bench --size real --device cuda --out DIR --check   # real-size shapes, random bf16 weights
    python -m asr.bench --merge DIR/results.json         # add a GPU run's records to bench/results.json
    python -m asr.bench --write-md                       # regenerate bench/RESULTS.md from bench/results.json

``--size real`` builds DiffusionGemma-26B-A4B, whisper-small's encoder and the default projector with their real
shapes on the ``meta`` device and materialises them directly on the GPU in bf16 (never on the CPU), keeping the
encoder/decoder weights and lm_head/embeddings tied (~51 GB instead of ~103 GB). Weights are random: speed does not
depend on them, transcripts are noise. Text decoding uses :class:`StandInTokenizer` (no Gemma tokenizer is
downloaded); the prompt ids are stand-ins with the real audio marker ids and a realistic prompt length.

Every timed case runs the project's code: :meth:`asr.Pipeline.transcribe` on generated 16 kHz audio, or its
pieces (whisper encoder, projector, prefill, one decoder step). Timings: a warm-up run, then the median of N
repeats, with ``torch.cuda.synchronize()`` around every timed region on a GPU. ``peak_gb`` is
``torch.cuda.max_memory_allocated()`` during the case (weights included); it is ``None`` on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import audio as A
from . import fast
from . import model as M
from .decoding import DenoiseOptions, denoise, draw_torch, eager_step
from .pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
RESULTS_JSON = ROOT / "bench" / "results.json"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
PROFILE_FILE = "decoder-step-profile.txt"  # written beside results.json by runs with an output folder
REQUIRED_FIELDS = ("device", "date", "case", "seconds", "peak_gb", "size", "steps", "batch")
REQUIRED_CASES = (
    "1x30s-8steps",
    "1x30s-16steps",
    "20x30s-8steps",
    "1x30s-8steps-5words",
    "1x30s-8steps-60words",
    "first-transcript",
    "baseline-generate-eager-8steps",
    "baseline-generate-static-8steps",
    "baseline-whisper-small-ar-100tok",
)
SEGMENT_SECONDS = 30.0
CANVAS = 192
# Stand-in prompt around the audio slots: the real audio marker ids, and ids of the length a Gemma 4 chat turn
# "<bos><|turn>user\n ... Transcribe the audio.<turn|>\n<|turn>model\n" has. Only the length matters for speed.
REAL_PREFIX = [2, 105, 2364, 107]
REAL_SUFFIX = [6056, 2081, 506, 6238, 236761, 106, 107, 105, 4368, 107]
REAL_EOS = [1, 106, 50]
GB = 1e9
_T0 = time.perf_counter()  # budgets count from the import of this module


# --- the real-size stack, built straight on the device -----------------------------------------------------------


def materialise(module: nn.Module, device: str | torch.device, poison: bool = True) -> int:
    """Replace every (meta) parameter and buffer of ``module`` by an uninitialised tensor on ``device``, in place.

    A tensor shared by several modules (tied weights) is allocated once and stays shared, unlike
    ``nn.Module.to_empty``, which allocates every tied tensor once per owner (~103 GB for DiffusionGemma) before
    ``tie_weights()`` could free the copies. Floating tensors are filled with NaN when ``poison`` so that anything
    the initialisation misses is detectable. Returns the number of tensors allocated.
    """
    memo: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # keeps the old tensor alive so its id stays unique
    for mod in module.modules():
        for store in (mod._parameters, mod._buffers):
            for key, old in list(store.items()):
                if old is None:
                    continue
                if id(old) not in memo:
                    new = torch.empty_like(old, device=device)
                    if poison and new.is_floating_point():
                        new.fill_(float("nan"))
                    if isinstance(old, nn.Parameter):
                        new = nn.Parameter(new, requires_grad=old.requires_grad)
                    memo[id(old)] = (old, new)
                store[key] = memo[id(old)][1]
    return len(memo)


def initialise(model: nn.Module) -> None:
    """Random-initialise a materialised model in place, on its device, and recompute its buffers.

    transformers models use their own ``initialize_weights()`` (``_init_weights`` per sub-model: normal(0, 0.02)
    weights, unit norms, rotary ``inv_freq``, ``embed_scale``...); other modules their ``reset_parameters()``.
    transformers 5.23 does not re-initialise the DiffusionGemma *encoder* layers' ``layer_scalar`` buffer (only the
    decoder's): it is set to 1, its constructor value, here.
    """
    from transformers import PreTrainedModel

    with torch.no_grad():
        if isinstance(model, PreTrainedModel):
            for mod in model.modules():
                mod.__dict__.pop("_is_hf_initialized", None)
            model.initialize_weights()
            for mod in model.modules():
                scalar = getattr(mod, "layer_scalar", None)
                if isinstance(scalar, torch.Tensor) and scalar.isnan().any():
                    scalar.fill_(1.0)
        else:
            for mod in model.modules():
                if hasattr(mod, "reset_parameters") and mod is not model:
                    mod.reset_parameters()


def nan_tensors(model: nn.Module) -> list[str]:
    """Names of floating parameters/buffers still holding NaN (i.e. missed by the initialisation)."""
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    return [n for n, t in named if t.is_floating_point() and t.device.type != "meta" and bool(t.isnan().any())]


def tied_pairs(backbone: nn.Module) -> list[tuple[str, str]]:
    """(encoder name, decoder name) of every weight DiffusionGemma ties, plus lm_head -> decoder embeddings."""
    params = dict(backbone.named_parameters(remove_duplicate=False))
    enc, dec = "model.encoder.language_model.", "model.decoder."
    pairs = [(n, dec + n[len(enc) :]) for n in params if n.startswith(enc) and dec + n[len(enc) :] in params]
    pairs.append(("lm_head.weight", dec + "embed_tokens.weight"))
    return pairs


def shared_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` are one tensor (same object, or same storage on a real device)."""
    if a is b:
        return True
    if a.device.type == "meta" or b.device.type == "meta":
        return False
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape


def tie_report(backbone: nn.Module) -> dict[str, Any]:
    """How many of the tied pairs really share storage, and the unique parameter bytes."""
    params = dict(backbone.named_parameters(remove_duplicate=False))
    pairs = tied_pairs(backbone)
    untied = [a for a, b in pairs if not shared_storage(params[a], params[b])]
    unique = {id(p): p for p in params.values()}
    return {
        "pairs": len(pairs),
        "untied": untied,
        "unique_param_gb": sum(p.numel() * p.element_size() for p in unique.values()) / GB,
        "all_param_gb": sum(p.numel() * p.element_size() for p in params.values()) / GB,
    }


def build_real_backbone(
    device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16, canvas_length: int = CANVAS
) -> nn.Module:
    """DiffusionGemma-26B-A4B's architecture with random weights, materialised straight on ``device``.

    Built on ``meta`` (dtypes as ``from_pretrained(dtype=...)`` gives them: rotary ``inv_freq`` stays float32),
    then :func:`materialise` (tied weights stay shared), re-tied with ``tie_weights()`` as a safeguard, and
    :func:`initialise`-d unless ``device`` is ``meta``.
    """
    from transformers import DiffusionGemmaForBlockDiffusion

    with torch.device("meta"):
        backbone = DiffusionGemmaForBlockDiffusion._from_config(M.real_backbone_config(canvas_length), dtype=dtype)
    materialise(backbone, device)
    backbone.tie_weights()
    if torch.device(device).type != "meta":
        initialise(backbone)
    return backbone.eval()


def build_real_parts(device: str, dtype: torch.dtype = torch.bfloat16, canvas_length: int = CANVAS):
    """Whisper-small encoder, default projector and backbone, all built on ``meta`` and materialised on ``device``."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    backbone = build_real_backbone(device, dtype, canvas_length)
    with torch.device("meta"):
        whisper = WhisperEncoder._from_config(M.whisper_small_config(), dtype=dtype)
        hidden = backbone.config.text_config.hidden_size
        projector = M.Projector(M.default_projector_layout(whisper.config.d_model, 1280, hidden))
        projector = projector.to(dtype)
    for part in (whisper, projector):
        materialise(part, device)
        if torch.device(device).type != "meta":
            initialise(part)
    return whisper.eval(), projector.eval(), backbone


def check_real_build(backbone: nn.Module, *parts: nn.Module) -> dict[str, Any]:
    """Tied storage, no NaN left by the initialisation, and buffers equal to freshly computed CPU values."""
    report = tie_report(backbone)
    nans = [n for m in (backbone, *parts) for n in nan_tensors(m)]
    buffer_problems = []
    for name, mod in backbone.named_modules():
        if type(mod).__name__ == "DiffusionGemmaTextRotaryEmbedding":
            fresh = type(mod)(mod.config)  # CPU, float32: what the constructor computes
            for bname, ref in fresh.named_buffers():
                got = getattr(mod, bname)
                if got.dtype != ref.dtype or not torch.equal(got.cpu(), ref):
                    buffer_problems.append(f"{name}.{bname}")
        if hasattr(mod, "scalar_embed_scale"):
            if float(mod.embed_scale) != float(torch.tensor(mod.scalar_embed_scale, dtype=mod.embed_scale.dtype)):
                buffer_problems.append(f"{name}.embed_scale")
    report.update(nan=nans, buffer_problems=buffer_problems)
    report["ok"] = not (report["untied"] or nans or buffer_problems)
    return report


class StandInTokenizer:
    """Decodes ids to pseudo-syllables, for timing runs without the real Gemma tokenizer (nothing downloaded).

    Id ``i`` is syllable ``i % 64``; it starts a new word when ``(i // 64)`` is even, else it continues the word
    (roughly as Gemma's ``▁word`` pieces do). Special ids are dropped with ``skip_special_tokens``. Only used to
    turn canvases into text: it has no effect on the timed model work.
    """

    SYLLABLES = [c + v for c in "bdfgklmnprstvzhj" for v in "aeio"]  # 64

    def __init__(self, special_ids: list[int]):
        self.special_ids = set(special_ids)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        out = []
        for i in ids:
            if i in self.special_ids:
                if not skip_special_tokens:
                    out.append(f"<{i}>")
                continue
            syllable = self.SYLLABLES[i % 64]
            out.append((" " if (i // 64) % 2 == 0 else "") + syllable)
        return "".join(out).strip()

    @classmethod
    def ids_for_words(cls, words: int, base: int) -> list[int]:
        """Token ids that decode to ``words`` words (every third word has two pieces: ~1.33 tokens per word)."""
        if base % 128:
            raise ValueError("base must be a multiple of 128 (so that its ids start words)")
        ids = []
        for w in range(words):
            ids.append(base + (w * 7) % 64)
            if w % 3 == 2:
                ids.append(base + 64 + (w * 11) % 64)
        return ids


@dataclass
class Stack:
    """A pipeline to benchmark and how it was made."""

    pipeline: Pipeline
    size: str
    device: str
    build_seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> M.SpeechModel:
        return self.pipeline.model


def build_stack(size: str, device: str, canvas_length: int = CANVAS) -> Stack:
    """The tiny stack (``asr.loading.build_tiny``, canvas 192; tests may ask for a shorter one) or the real-size
    one on ``device``."""
    from transformers import WhisperFeatureExtractor

    from .loading import build_tiny, use_kernels

    sync(device)
    t = time.perf_counter()
    if size == "tiny":
        speech, _, features = build_tiny(seed=0, canvas_length=canvas_length)
        speech = speech.to(device).eval()
        prompt = speech.prompt
        info: dict[str, Any] = {"dtype": "float32", "kernels": use_kernels(speech.backbone, device)}
    else:
        whisper, projector, backbone = build_real_parts(device)
        info = {"dtype": "bfloat16", "kernels": use_kernels(backbone, device)}  # as asr.load does
        prompt = M.PromptFormat(prefix=REAL_PREFIX, suffix=REAL_SUFFIX, eos_ids=REAL_EOS, pad_id=0)
        speech = M.SpeechModel(whisper, projector, backbone, prompt).eval()
        features = WhisperFeatureExtractor(feature_size=80)
    sync(device)
    seconds = time.perf_counter() - t
    tokenizer = StandInTokenizer([prompt.pad_id, *prompt.eos_ids, *prompt.prefix[:1]])
    label = f"{size}-random (random weights: output is noise, for benchmarks only)"
    pipeline = Pipeline(speech, tokenizer, features, name=label, device=device, cuda_graphs=False)
    info["sampling"] = "fused" if fast.fused_sampling(speech.backbone) else "reference"  # asr.kernels.use_fused
    if device.startswith("cuda"):
        info["weights_gb"] = torch.cuda.memory_allocated() / GB
    return Stack(pipeline, size, device, seconds, info)


# --- measuring -----------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """16 kHz voiced-sounding noise with no pauses: the splitter cuts it into exact 30 s windows."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * A.SAMPLE_RATE))) / A.SAMPLE_RATE
    buzz = np.sign(np.sin(2 * np.pi * 150.0 * t)) * 0.3 + 0.05 * rng.standard_normal(t.size)
    syllables = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (buzz * syllables * 0.5).astype(np.float32)


@dataclass
class Timing:
    seconds: float
    samples: list[float]
    peak_gb: float | None
    result: Any = None


def measure(fn: Callable[[], Any], device: str, repeats: int, warmup: int = 1) -> Timing:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs; peak GPU memory over all of them."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        fn()
    samples, result = [], None
    for _ in range(max(1, repeats)):
        sync(device)
        t = time.perf_counter()
        result = fn()
        sync(device)
        samples.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / GB if cuda else None
    return Timing(statistics.median(samples), samples, peak, result)


@contextlib.contextmanager
def forced_canvas(backbone: nn.Module, ids: torch.Tensor) -> Iterator[None]:
    """Make every decoder step's argmax canvas equal ``ids`` (1-D, canvas length) by adding +60 to those logits.

    Random weights cannot be steered to a transcript of a chosen length through the audio; this forces the
    content instead. The decoder still computes all canvas positions, and the hook costs the same for every ``ids``.
    """
    positions = torch.arange(ids.numel(), device=ids.device)

    def hook(_module, _args, out):
        out[:, positions, ids] += 60.0
        return out

    handle = backbone.lm_head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Set environment variables for the duration (None: leave that one as it is)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def graphed_pipeline(pipe: Pipeline, on: bool = True) -> Iterator[None]:
    """Make ``pipe`` denoise every batch with :func:`asr.fast.denoise` for the duration (the other cases time the
    eager step: the benchmark builds its pipeline with ``cuda_graphs=False``). ``on=False`` changes nothing."""
    if not on:
        yield
        return
    saved = pipe.cuda_graphs, pipe.graph_max_batch, pipe.graph_max_batch_fused
    pipe.cuda_graphs, pipe.graph_max_batch, pipe.graph_max_batch_fused = True, 1 << 30, 1 << 30
    try:
        yield
    finally:
        pipe.cuda_graphs, pipe.graph_max_batch, pipe.graph_max_batch_fused = saved


def device_label(device: str) -> str:
    """The GPU's name, or e.g. ``cpu: 1 thread, 2 cores, AMD EPYC (AVX2)``: the vector instructions torch uses, since
    CPUs of one name differ (the tiny stack's 1x30s-8steps: 0.092 s on a 2-core AMD EPYC with AVX-512, 0.158 s on one
    with AVX2 only)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    threads = torch.get_num_threads()
    capability = torch.backends.cpu.get_cpu_capability()
    return f"cpu: {threads} thread{'s' if threads > 1 else ''}, {os.cpu_count()} cores, {model} ({capability})"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --- the cases -----------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    repeats: int
    multi_repeats: int  # for the many-segment cases
    warmup: int
    budget_s: float | None
    static_compile_s: float  # time the static-cache compile needs; skipped when less is left
    check: bool
    quick: bool = False  # leave out the cases no regression test needs (4x, 16x, 16-wide baselines...)
    lora_rank: int = 0  # > 0: finally inject LoRA of this rank on all attention projections and time again
    only: frozenset[str] | None = None  # run just these cases (names as in run_all; build always)


class Bench:
    """Runs the cases on one stack, collects records and writes them to ``out`` after every case."""

    fused_step_batches = (1, 16, 20)  # sampling(): the batches of the fused-step cases

    def __init__(self, stack: Stack, settings: Settings, out: Path | None):
        self.stack, self.s, self.out = stack, settings, out
        self.device = stack.device
        self.records: list[dict[str, Any]] = []
        self.started = _T0
        self.base = {
            "device": device_label(self.device),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "size": stack.size,
            "dtype": stack.info.get("dtype"),
            "kernels": stack.info.get("kernels"),  # asr.loading.use_kernels: what the cases without a suffix ran
            "sampling": stack.info.get("sampling"),  # the denoising loop: denoise_fused ("fused") or denoise
            "canvas": stack.model.canvas_length,
            "commit": os.environ.get("BENCH_COMMIT") or git_commit(),  # the device machine's .git can be stale
            "torch": torch.__version__,
            "transformers": _transformers_version(),
        }
        if os.environ.get("BENCH_CONDITIONS"):  # e.g. other work sharing the machine during the run
            self.base["conditions"] = os.environ["BENCH_CONDITIONS"]
        self.base["run"] = f"{self.base['date']}-{stack.size}-{'cuda' if self.device.startswith('cuda') else 'cpu'}"
        self._audio: dict[int, np.ndarray] = {}
        self._moe_best: dict[int, tuple[str, float]] = {}  # batch -> (ASR_MOE_BLOCKS, seconds), from moe_layer

    # records

    def add(self, case: str, seconds: float | None, peak_gb: float | None, **fields: Any) -> dict[str, Any]:
        rec = {**self.base, "case": case, "seconds": _round(seconds), "peak_gb": _round(peak_gb, 3)}
        rec.setdefault("steps", None)
        rec.setdefault("batch", None)
        rec.update({k: _round(v) if isinstance(v, float) else v for k, v in fields.items()})
        if os.name == "posix":
            rec.setdefault("loadavg_1m", round(os.getloadavg()[0], 2))
        kernels = sys.modules.get(f"{__package__}.kernels")
        if kernels is not None and kernels.FAILED:  # a kernel that failed runs transformers' (or eager) code since
            rec["kernels_failed"] = dict(kernels.FAILED)
        self.records.append(rec)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "results.json").write_text(json.dumps(self.records, indent=1) + "\n")
        shown = "-" if seconds is None else f"{seconds:.4f} s"
        print(f"  {case:<40} {shown:>12}  {rec.get('error') or rec.get('note') or ''}", flush=True)
        return rec

    def case(self, name: str, fn: Callable[[], None], needs_s: float = 0.0) -> None:
        """Run one case; a failure (OOM included) becomes a record with ``error`` instead of ending the run."""
        if self.s.only is not None and name not in self.s.only:
            return
        if self.s.budget_s is not None and time.perf_counter() - self.started + needs_s > self.s.budget_s:
            self.add(name, None, None, error=f"skipped: the {self.s.budget_s:.0f} s budget would be exceeded")
            return
        try:
            fn()
        except torch.OutOfMemoryError as exc:
            self.add(name, None, _peak(self.device), error=f"out of memory: {str(exc).splitlines()[0]}")
        except Exception as exc:  # noqa: BLE001 - keep the rest of a (GPU) run
            traceback.print_exc()
            self.add(name, None, _peak(self.device), error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        finally:
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()

    def audio(self, segments: int) -> np.ndarray:
        if segments not in self._audio:
            self._audio[segments] = speechlike(segments * SEGMENT_SECONDS, seed=segments)
        return self._audio[segments]

    # the project's transcription path

    def transcribe_case(
        self,
        name: str,
        segments: int,
        steps: int,
        *,
        repeats: int | None = None,
        warmup: int | None = None,
        record_steps: bool = True,
        batch_size: int | None = None,
        options: DenoiseOptions | None = None,
        note: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        pipe = self.stack.pipeline
        wave = self.audio(segments)
        batch_size = batch_size or pipe.default_batch_size
        repeats = repeats or (self.s.repeats if segments == 1 else self.s.multi_repeats)
        warmup = self.s.warmup if warmup is None else warmup

        def run():
            return pipe.transcribe(
                wave, steps=steps, seed=0, options=options, record_steps=record_steps, batch_size=batch_size
            )

        timing = measure(run, self.device, repeats, warmup)
        tr = timing.result
        if len(tr.segments) != segments:
            raise RuntimeError(f"the splitter made {len(tr.segments)} segments of {segments}x30 s audio")
        steps_run = len(tr.segments[0].steps) if tr.segments[0].steps is not None else None
        return self.add(
            name, timing.seconds, timing.peak_gb, steps=steps, batch=min(segments, batch_size), segments=segments,
            steps_run=steps_run, audio_s=tr.timings.audio_seconds, per_segment_s=timing.seconds / segments,
            rtfx=tr.timings.audio_seconds / timing.seconds, repeats=len(timing.samples), samples=timing.samples,
            stages={k: round(v, 5) for k, v in tr.timings.stages.items()}, record_steps=record_steps,
            words=len(tr.text.split()), note=note, **extra,
        )  # fmt: skip

    def run_all(self) -> list[dict[str, Any]]:
        """Every case, cheapest and most important first (a GPU run may be cut short)."""
        st, dev = self.stack, self.device
        self.add("build", st.build_seconds, _peak(dev), note="weights materialised and initialised", **st.info)
        self.case("first-transcript", self.first_transcript)
        self.case("components", self.components)
        for name, segs, steps in [("1x30s-8steps", 1, 8), ("1x30s-16steps", 1, 16)]:
            self.case(name, lambda n=name, g=segs, k=steps: self.transcribe_case(n, g, k))
        self.case(
            "1x30s-8steps-norecord",
            lambda: self.transcribe_case("1x30s-8steps-norecord", 1, 8, record_steps=False, note="record_steps=False"),
        )
        default_batch = f"Pipeline batch_size={st.pipeline.default_batch_size} (its default)"
        for segs in (20,) if self.s.quick else (4, 16, 20):
            name = f"{segs}x30s-8steps"
            self.case(name, lambda n=name, g=segs: self.transcribe_case(n, g, 8, note=default_batch))
        # half the batch: the full-vocabulary tensors of a step (batch x canvas x 262144) set the peak above the
        # weights, so this is the memory target's fallback (also the case that still runs after an out-of-memory)
        name = "20x30s-8steps-batch8"
        self.case(name, lambda: self.transcribe_case(name, 20, 8, batch_size=8, note="Pipeline batch_size=8"))
        self.case("words", self.words)
        if self.s.check:
            self.case("check-deterministic", self.check_deterministic)
            self.case("check-cudagraph-identical", self.check_graph_identical)
        self.case("1x30s-8steps-cudagraph", lambda: self.graph_case(1))
        if dev.startswith("cuda"):  # Pipeline's own path for 1-4 windows on CUDA: the length and record targets
            self.case("1x30s-8steps-norecord-cudagraph", self.graphed_norecord)
            self.case("words-cudagraph", lambda: self.words(graphed=True))
        if not self.s.quick:
            self.case("20x30s-8steps-cudagraph", lambda: self.graph_case(20))
        self._drop_graphs()
        if dev.startswith("cuda"):  # the fused sampling loop (the CUDA default): its check, batch 20, attribution
            self.case("sampling", self.sampling)
        if dev.startswith("cuda"):  # asr.kernels (on by default on CUDA): the experts alone, then the variants
            self.case("moe-layer", self.moe_layer)
            self.case("unfused", lambda: self.variant(norms=False, experts=False))  # what ASR_KERNELS=off runs
            self.case("profile-16x", self.profile_batch)
            for name, norms, experts in (("fused", True, True), ("fused-norms", True, False),
                                         ("fused-moe", False, True)):  # fmt: skip
                if self.s.only and name in self.s.only:  # attribution runs only, by name: fused is the default
                    self.case(name, lambda n=norms, e=experts: self.variant(norms=n, experts=e))
        self.case("baseline-generate-eager-8steps", self.generate_eager)
        self.case("baseline-whisper-small-ar-100tok", self.whisper_ar)
        compile_s = self.s.static_compile_s if dev.startswith("cuda") else 0.0
        self.case("baseline-generate-static-8steps", self.generate_static, needs_s=compile_s)
        if self.s.lora_rank and not self.s.quick:  # last: the LoRA stays in the backbone
            self.case(f"1x30s-8steps-lora{self.s.lora_rank}", self.lora, needs_s=30.0)
        return self.records

    def first_transcript(self) -> None:
        """The first call after the weights are on the device: nothing warmed up, nothing compiled."""
        wave = self.audio(1)
        sync(self.device)
        t = time.perf_counter()
        tr = self.stack.pipeline.transcribe(wave, steps=8, seed=0)
        sync(self.device)
        seconds = time.perf_counter() - t
        self.add(
            "first-transcript", seconds, _peak(self.device), steps=8, batch=1, segments=1,
            stages={k: round(v, 5) for k, v in tr.timings.stages.items()},
            note="first Pipeline.transcribe after the weights are on the device (cold)",
        )  # fmt: skip

    def components(self) -> None:
        """Whisper encoder, projector, prefill and single decoder steps, each timed alone (batch 1 unless named)."""
        model, pipe, dev = self.stack.model, self.stack.pipeline, self.device
        wave = self.audio(1)
        chunks20 = [A.cut(self.audio(20), s) for s in A.split_on_silence(self.audio(20))]
        r = self.s.repeats
        timing = measure(lambda: pipe.features([wave]), dev, r, self.s.warmup)
        self.add("features", timing.seconds, timing.peak_gb, batch=1, segments=1, repeats=r, note="CPU, as Pipeline")
        if not self.s.quick:
            timing = measure(lambda: pipe.features(chunks20), dev, self.s.multi_repeats, self.s.warmup)
            self.add("features-20x", timing.seconds, timing.peak_gb, batch=20, segments=20, note="CPU, as Pipeline")
        if dev.startswith("cuda"):
            fe = pipe.feature_extractor
            timing = measure(
                lambda: fe(chunks20, sampling_rate=A.SAMPLE_RATE, return_tensors="pt", device=dev).input_features,
                dev, self.s.multi_repeats, self.s.warmup,
            )  # fmt: skip
            self.add("features-20x-device", timing.seconds, timing.peak_gb, batch=20, segments=20,
                     note="feature_extractor(..., device='cuda'): not what Pipeline does today")  # fmt: skip
        with torch.inference_mode():
            feats = pipe.features([wave]).to(dev)
            wdtype = next(model.whisper.parameters()).dtype
            timing = measure(lambda: model.whisper(feats.to(wdtype)).last_hidden_state, dev, r, self.s.warmup)
            self.add("whisper-encoder", timing.seconds, timing.peak_gb, batch=1, segments=1, repeats=r)
            frames = timing.result
            timing = measure(lambda: model.projector(frames), dev, r, self.s.warmup)
            self.add("projector", timing.seconds, timing.peak_gb, batch=1, segments=1, repeats=r)
            embeds = model.prompt_embeddings(timing.result.to(model.backbone.dtype))
            timing = measure(lambda: model.prefill(embeds), dev, r, self.s.warmup)
            self.add("prefill", timing.seconds, timing.peak_gb, batch=1, prompt_tokens=embeds.shape[1], repeats=r)
            if dev.startswith("cuda"):  # the first call captures the graph: measure() warms up first
                timing = measure(lambda: fast.prefill(model, embeds), dev, r, max(1, self.s.warmup))
                self.add("prefill-cudagraph", timing.seconds, timing.peak_gb, batch=1, prompt_tokens=embeds.shape[1],
                         repeats=r, note="asr.fast.prefill: the prefill replayed as a CUDA graph")  # fmt: skip
                fast.drop_runners(model.backbone)
            for batch in (1, 4) if self.s.quick else (1, 4, 16):
                self._decoder_step(embeds, batch)
            if self.out is not None:
                self._profile_step(embeds)

    def _step_call(self, embeds: torch.Tensor, batch: int) -> Callable[[], Any]:
        """One eager decoder step of the pipeline (:func:`eager_step`) over a random canvas, after a real prefill."""
        bb, dev = self.stack.model.backbone, self.device
        cache = self.stack.model.prefill(embeds.expand(batch, -1, -1).contiguous())
        prompt_len, canvas_len = embeds.shape[1], bb.config.canvas_length
        vocab = bb.config.text_config.vocab_size
        gen = torch.Generator(device=dev).manual_seed(0)
        canvas = torch.randint(0, vocab, (batch, canvas_len), device=dev, generator=gen)
        sc = torch.randn(batch, canvas_len, vocab, device=dev, generator=gen).to(
            bb.model.decoder.embed_tokens.weight.dtype
        )
        step = eager_step(bb, cache, prompt_len, batch)
        return lambda: step(canvas, sc)

    def _profile_step(self, embeds: torch.Tensor, steps: int = 3, path: Path | None = None) -> None:
        """Operator table (CUDA kernels on a GPU) of ``steps`` eager decoder steps at batch 1, into ``path``
        (``OUT/decoder-step-profile.txt``): where a step's time goes, for the kernel work the targets need."""
        from .train import start_profiler, write_profile

        call = self._step_call(embeds, 1)
        call()  # warm-up outside the profile
        sync(self.device)
        profiler = start_profiler(self.device)
        for _ in range(steps):
            call()
        sync(self.device)
        what = f"{steps} eager decoder steps at batch 1"
        write_profile(profiler, path or self.out / PROFILE_FILE, self.device, what)

    def _decoder_step(self, embeds: torch.Tensor, batch: int, suffix: str = "", **extra: Any) -> None:
        call, dev = self._step_call(embeds, batch), self.device
        timing = measure(call, dev, self.s.repeats, self.s.warmup)
        name = ("decoder-step" if batch == 1 else f"decoder-step-{batch}x") + suffix
        self.add(name, timing.seconds, timing.peak_gb, batch=batch, segments=batch, repeats=len(timing.samples),
                 note="one backbone forward over the canvas, with self-conditioning logits", **extra)  # fmt: skip

    def words(self, graphed: bool = False) -> None:
        """5- vs 60-word transcripts: the canvas content is forced, the compute is the canvas's (see forced_canvas).

        ``graphed``: with :func:`graphed_pipeline`; the graphs are captured again for each forced canvas (the forcing
        hook's target tensor is part of the captured step)."""
        model = self.stack.model
        base = 12_800 if self.stack.size == "real" else 128
        prompt = model.prompt
        suffix, how = ("-cudagraph", "; asr.fast CUDA graphs") if graphed else ("", "")
        for words in (5, 60):
            ids = StandInTokenizer.ids_for_words(words, base) + [prompt.eos_ids[0]]
            ids += [prompt.pad_id] * (model.canvas_length - len(ids))
            target = torch.tensor(ids, device=self.device)
            if graphed:  # graphs captured without this canvas's hook (or with the other one's) must not replay
                self._drop_graphs()
            with forced_canvas(model.backbone, target), graphed_pipeline(self.stack.pipeline, graphed):
                rec = self.transcribe_case(
                    f"1x30s-8steps-{words}words{suffix}", 1, 8, options=DenoiseOptions(steps=8, early_stop=False),
                    warmup=max(1, self.s.warmup) if graphed else None,  # the warm-up call captures
                    note=f"canvas forced to a {words}-word transcript + EOS + padding; early_stop=False{how}",
                    transcript_tokens=len(ids) - ids.count(prompt.pad_id) - 1,
                )  # fmt: skip
            if rec["words"] != words:
                raise RuntimeError(f"forced a {words}-word canvas, the pipeline returned {rec['words']} words")

    def moe_layer(self) -> None:
        """One layer's MoE experts alone on the canvas of batch 1 and of batch 16 (random hidden states, uniform
        random routing): transformers' ``grouped_mm`` against :func:`asr.kernels.fused_experts` with a few tile
        settings (``ASR_MOE_BLOCKS`` takes the best), and how far the results are apart."""
        tiles = {  # (block_m, block_n, block_k, warps, stages): ~12 rows per expert at batch 1, ~190 at batch 16
            1: [(32, 64, 128, 4, 3), (16, 64, 128, 4, 3), (32, 32, 128, 4, 4), (32, 128, 128, 4, 3),
                (16, 32, 256, 4, 4), (32, 64, 256, 4, 3), (16, 128, 128, 8, 3)],
            16: [(64, 64, 64, 4, 3), (64, 128, 64, 4, 3), (32, 64, 128, 4, 3), (128, 128, 64, 8, 3),
                 (64, 128, 64, 8, 4), (128, 64, 64, 4, 4)],
        }  # fmt: skip
        for batch, settings in tiles.items():
            self._moe_layer_at(batch, settings)

    def _moe_layer_at(self, batch: int, tiles: list[tuple[int, ...]]) -> None:
        from transformers.integrations.moe import grouped_mm_experts_forward

        from . import kernels

        bb, dev, tokens = self.stack.model.backbone, self.device, batch * self.stack.model.canvas_length
        experts = next(m for m in bb.modules() if hasattr(m, "gate_up_proj"))
        cfg = bb.config.text_config
        gen = torch.Generator(device=dev).manual_seed(batch)
        x = torch.randn(tokens, cfg.hidden_size, device=dev, generator=gen).to(bb.dtype)
        probs = torch.randn(tokens, cfg.num_experts, device=dev, generator=gen).softmax(-1)
        weights, index = probs.topk(cfg.top_k_experts, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        per_expert = (experts.gate_up_proj[0].numel() + experts.down_proj[0].numel()) * experts.gate_up_proj.itemsize
        read = index.unique().numel() * per_expert  # the expert weight bytes one call must read at least
        repeats = self.s.repeats * 4
        common = {"batch": batch, "tokens": tokens, "repeats": repeats}
        with torch.inference_mode():
            ref = measure(lambda: grouped_mm_experts_forward(experts, x, index, weights), dev, repeats)
            self.add(f"moe-layer-{tokens}tok-grouped_mm", ref.seconds, ref.peak_gb, gbps=read / ref.seconds / GB,
                     note="transformers' grouped_mm experts, one layer", **common)  # fmt: skip
            scale = ref.result.float().abs().max()
            for tile in tiles:
                blocks, name = kernels.Blocks(*tile), f"moe-layer-{tokens}tok-fused-{'x'.join(map(str, tile))}"
                try:  # a tile the GPU cannot run (shared memory, registers) must not end the sweep
                    run = measure(
                        lambda b=blocks: kernels.fused_experts(
                            x, index, weights, experts.gate_up_proj, experts.down_proj, cfg.hidden_activation, b
                        ),
                        dev, repeats, warmup=2,
                    )  # fmt: skip
                except Exception as exc:  # noqa: BLE001
                    self.add(name, None, _peak(dev), error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                    continue
                err = float((run.result.float() - ref.result.float()).abs().max() / scale)
                self.add(
                    name, run.seconds, run.peak_gb, gbps=read / run.seconds / GB, rel_err=err, ok=err < 2e-2,
                    blocks=",".join(map(str, tile)), speedup=ref.seconds / run.seconds,
                    note="asr.kernels.fused_experts; rel_err = max |fused - grouped_mm| / max |grouped_mm|", **common,
                )  # fmt: skip
                best = self._moe_best.get(batch)
                if err < 2e-2 and (best is None or run.seconds < best[1]):
                    self._moe_best[batch] = (",".join(map(str, tile)), run.seconds)

    @contextlib.contextmanager
    def using_kernels(self, norms: bool, experts: bool) -> Iterator[str]:
        """The backbone's RMSNorms and experts as :mod:`asr.kernels` (each True) or transformers' for the duration,
        then the stack's default again (``asr.loading.use_kernels``: fused on CUDA); yields the variant's name. The
        denoising loop stays the stack's, except with both off (what ``ASR_KERNELS=off`` runs: the reference loop)."""
        from . import kernels

        bb = self.stack.model.backbone
        default_sampling = self.stack.info.get("sampling") == "fused"
        try:
            yield kernels.use_fused(bb, norms=norms, experts=experts, sampling=default_sampling and (norms or experts))
        finally:
            default = self.stack.info.get("kernels") == "fused"
            kernels.use_fused(bb, norms=default, experts=default, sampling=default_sampling)
            self._drop_graphs()

    def variant(self, norms: bool = True, experts: bool = True) -> None:
        """The pipeline with its RMSNorms and/or MoE experts as :mod:`asr.kernels` or as transformers' (both False:
        ``-unfused``, what ``ASR_KERNELS=off`` runs): an agreement check against transformers' path for one seed
        (when a kernel is on), eager decoder steps with a kernel profile, the 1- and 4-window graphed cases and the
        20-window cases. Tiles: the moe-layer sweep's best of this run where it ran, else
        ``kernels.default_blocks``."""
        pipe, wave = self.stack.pipeline, self.audio(1)
        small, large = (self._moe_best.get(b, (None,))[0] for b in (1, 16))
        if norms or experts:
            self._check_kernels(norms, experts, small)
        with self.using_kernels(norms, experts) as name:
            suffix = "-unfused" if name == "transformers" else f"-{name}"
            extra = {"kernels": name}
            with _env(ASR_MOE_BLOCKS=small):
                self._variant_cases(pipe, wave, suffix, {**extra, "blocks": small or "default"})
            if not self.s.quick:
                with _env(ASR_MOE_BLOCKS=large):
                    extra["blocks"] = large or "default"
                    self.transcribe_case(f"20x30s-8steps{suffix}", 20, 8, note=f"kernels: {name}; "
                                         "Pipeline batch_size=16", **extra)  # fmt: skip
                    note = f"kernels: {name}; asr.fast CUDA graphs"
                    with graphed_pipeline(pipe):
                        self.transcribe_case(f"20x30s-8steps-cudagraph{suffix}", 20, 8, warmup=1, note=note, **extra)

    def _check_kernels(self, norms: bool, experts: bool, blocks: str | None) -> None:
        """The first denoising step's argmax canvas (1x30s, seed 11, same noise) with the kernels against
        transformers' path, beside the same agreement of transformers' own ``eager`` experts loop with
        ``grouped_mm``: on random weights the logits are nearly flat, so float rounding alone flips a few argmaxes,
        and that spread is the bar. ok: the kernels agree at least as well as eager does, less 2 points (or >= 99 %)."""
        bb, pipe, wave = self.stack.model.backbone, self.stack.pipeline, self.audio(1)

        def first_argmax():
            return pipe.transcribe(wave, steps=2, seed=11).segments[0].steps.argmax[0]

        with self.using_kernels(False, False):
            ref = first_argmax()
            bb.set_experts_implementation("eager")
            spread = float((first_argmax() == ref).mean())
        with self.using_kernels(norms, experts) as name, _env(ASR_MOE_BLOCKS=blocks):
            agree = float((first_argmax() == ref).mean())
        self.add(f"check-{name}", None, _peak(self.device), ok=agree >= min(0.99, spread - 0.02), steps=2, batch=1,
                 first_step_argmax_agree=agree, eager_experts_agree=spread, blocks=blocks or "default",
                 note=f"1x30s, seed 11: first step's argmax canvas, asr.kernels ({name}) vs transformers' path "
                      f"agree {agree:.1%}; transformers' eager experts vs grouped_mm {spread:.1%}")  # fmt: skip

    def _variant_cases(self, pipe: Pipeline, wave: np.ndarray, suffix: str, extra: dict[str, Any]) -> None:
        """variant()'s eager decoder steps (1x, 16x; with a kernel profile) and 1- and 4-window cases, run with the
        variant's kernels in place."""
        model = self.stack.model
        with torch.inference_mode():
            embeds = model.prompt_embeddings(model.embed_audio(pipe.features([wave]).to(self.device)))
            for batch in (1,) if self.s.quick else (1, 16):
                self._decoder_step(embeds, batch, suffix=suffix, **extra)
            if self.out is not None:
                self._profile_step(embeds, path=self.out / PROFILE_FILE.replace(".txt", f"{suffix}.txt"))
        what = f"kernels: {extra['kernels']}"
        self.transcribe_case(f"1x30s-8steps{suffix}", 1, 8, note=f"{what}, eager steps", **extra)
        with graphed_pipeline(pipe):
            warm = max(1, self.s.warmup)
            self.transcribe_case(f"1x30s-8steps-cudagraph{suffix}", 1, 8, warmup=warm,
                                 note=f"{what}; asr.fast CUDA graphs", **extra)  # fmt: skip
            self.transcribe_case(f"1x30s-8steps-norecord-cudagraph{suffix}", 1, 8, record_steps=False, warmup=warm,
                                 note=f"record_steps=False; {what}; asr.fast CUDA graphs", **extra)  # fmt: skip
            if not self.s.quick:
                self.transcribe_case(f"4x30s-8steps-cudagraph{suffix}", 4, 8, warmup=warm,
                                     note=f"{what}; asr.fast CUDA graphs", **extra)  # fmt: skip
        self._drop_graphs()

    def sampling(self) -> None:
        """The fused sampling loop (:func:`asr.decoding.denoise_fused`, the CUDA default since it exists):
        ``check-fused-sampling`` (the kernel against the eager draw on real-size logits, given the same exponential
        draws), one fused step (decoder forward + the kernel) at batch 1 / 16 / 20, 20 windows in one batch of 20
        (eager and graphed), and the same cases with the reference loop (``-refsampling``) for attribution."""
        self._check_fused_sampling()
        model, pipe = self.stack.model, self.stack.pipeline
        with torch.inference_mode():
            embeds = model.prompt_embeddings(model.embed_audio(pipe.features([self.audio(1)]).to(self.device)))
            for batch in self.fused_step_batches:
                self._fused_step(embeds, batch)
        self.transcribe_case("20x30s-8steps-batch20", 20, 8, batch_size=20, note="Pipeline batch_size=20 (one batch)")
        with graphed_pipeline(pipe):
            self.transcribe_case("20x30s-8steps-cudagraph-batch20", 20, 8, batch_size=20, warmup=1,
                                 note="Pipeline batch_size=20 (one batch); asr.fast CUDA graphs")  # fmt: skip
        self._drop_graphs()
        bb = model.backbone
        fast.use_fused_sampling(bb, False)
        try:
            extra = {"sampling": "reference"}
            with graphed_pipeline(pipe):
                self.transcribe_case(
                    "1x30s-8steps-cudagraph-refsampling",
                    1,
                    8,
                    warmup=1,
                    note="the reference loop (asr.decoding.denoise); asr.fast CUDA graphs",
                    **extra,
                )
            self._drop_graphs()
            self.transcribe_case("20x30s-8steps-refsampling", 20, 8, note="the reference loop; Pipeline batch_size=16",
                                 **extra)  # fmt: skip
        finally:
            fast.use_fused_sampling(bb, self.stack.info.get("sampling") == "fused")
            self._drop_graphs()

    def _check_fused_sampling(self) -> None:
        """asr.kernels.sample_logits on logits of the stack's size and dtype (real: 1 x 192 x 262144, bf16) against
        asr.decoding.draw_torch, given the same exponential draws: the same samples and argmax, entropies and
        probabilities to rounding."""
        from . import kernels

        bb, dev = self.stack.model.backbone, self.device
        vocab, length = bb.config.text_config.vocab_size, bb.config.canvas_length
        gen = torch.Generator(device=dev).manual_seed(3)
        logits = torch.randn(1, length, vocab, device=dev, generator=gen) * 3
        logits[0, ::2].scatter_(-1, torch.randint(0, vocab, (length // 2, 1), device=dev, generator=gen), 40.0)
        logits = logits.to(bb.model.decoder.embed_tokens.weight.dtype)
        softcap = bb.config.text_config.final_logit_softcapping
        ref_probs = torch.empty_like(logits)
        ref = draw_torch(logits, 0.7, softcap, ref_probs, torch.Generator(device=dev).manual_seed(5))
        q = torch.empty(logits.shape, device=dev).exponential_(generator=torch.Generator(device=dev).manual_seed(5))
        buf = logits.clone()
        got = kernels.sample_logits(buf, 0.7, softcap, buf, q=q)
        same_sample = float((got.sampled == ref.sampled).float().mean())
        same_argmax = float((got.argmax == ref.argmax).float().mean())
        entropy_err = float((got.entropy - ref.entropy).abs().max())
        probs_err = float((buf.float() - ref_probs.float()).abs().max())
        ok = same_sample == 1.0 and same_argmax == 1.0 and entropy_err < 1e-3 and probs_err < 1e-3
        seed = torch.ones(1, dtype=torch.long, device=dev)
        timing = measure(lambda: kernels.sample_logits(buf, 0.7, softcap, buf, seed=seed), dev, self.s.repeats, 1)
        note = (
            "asr.kernels.sample_logits vs the eager draw, logits of the model's size and dtype, same exponential "
            "draws: samples, argmax equal; entropy, probabilities to rounding"
        )
        self.add("check-fused-sampling", None, _peak(dev), ok=ok, batch=1, same_sample=same_sample,
                 same_argmax=same_argmax, entropy_max_err=entropy_err, probs_max_err=probs_err,
                 kernel_s=timing.seconds, note=note)  # fmt: skip

    def _fused_step(self, embeds: torch.Tensor, batch: int) -> None:
        """One step of the fused loop, eager: the decoder forward into the bf16 buffer (FusedStepRunner) and the
        sampling kernel, after a real prefill; the counterpart of ``decoder-step`` plus the sampling between steps."""
        from . import kernels

        bb, dev = self.stack.model.backbone, self.device
        cache = self.stack.model.prefill(embeds.expand(batch, -1, -1).contiguous())
        runner = fast.FusedStepRunner(bb, cache, embeds.shape[1], batch, use_graph=False)
        vocab = bb.config.text_config.vocab_size
        canvas = torch.randint(0, vocab, (batch, bb.config.canvas_length), device=dev)
        seed = torch.ones(1, dtype=torch.long, device=dev)
        softcap = bb.config.text_config.final_logit_softcapping

        def step():
            logits = runner(canvas, True)
            return kernels.sample_logits(logits, 0.7, softcap, logits, seed=seed)

        timing = measure(step, dev, self.s.repeats, self.s.warmup)
        name = "fused-step" if batch == 1 else f"fused-step-{batch}x"
        self.add(name, timing.seconds, timing.peak_gb, batch=batch, segments=batch, repeats=len(timing.samples),
                 note="eager: decoder forward (bf16 logits, self-conditioning from the probabilities) + sampling "
                 "kernel")  # fmt: skip

    def profile_batch(self, segments: int = 16) -> None:
        """Operator table of one eager ``Pipeline.transcribe`` of ``segments`` windows (one batch, 8 steps, the stack's
        default kernels), into ``OUT/transcribe-16x-profile.txt``: how the full-vocabulary work of sampling
        (softmax, multinomial, entropies over batch x canvas x 262144) weighs against the decoder at a large batch."""
        from .train import start_profiler, write_profile

        pipe, wave, kernels = self.stack.pipeline, self.audio(segments), self.stack.info.get("kernels")
        if self.device.startswith("cuda"):  # its own peak, not an earlier case's
            torch.cuda.reset_peak_memory_stats()
        pipe.transcribe(wave, steps=8, seed=0)  # warm-up (Triton compiles)
        sync(self.device)
        profiler = start_profiler(self.device)
        t = time.perf_counter()
        pipe.transcribe(wave, steps=8, seed=0)
        sync(self.device)
        seconds = time.perf_counter() - t
        if self.out is not None:
            what = f"one eager transcribe of {segments}x30 s, 8 steps, kernels: {kernels}"
            write_profile(profiler, self.out / f"transcribe-{segments}x-profile.txt", self.device, what)
        else:
            profiler.stop()
        self.add(f"profile-{segments}x", seconds, _peak(self.device), steps=8, batch=segments, segments=segments,
                 note="under the profiler (slower than unprofiled): see the profile file")  # fmt: skip

    def check_deterministic(self) -> None:
        wave = self.audio(1)
        a = self.stack.pipeline.transcribe(wave, steps=8, seed=7, record_steps=False)
        b = self.stack.pipeline.transcribe(wave, steps=8, seed=7, record_steps=False)
        same = a.segments[0].tokens == b.segments[0].tokens
        self.add("check-deterministic", None, _peak(self.device), ok=same, steps=8, batch=1,
                 note="same seed twice gives the same transcript tokens")  # fmt: skip

    def lora(self) -> None:
        """The released adapter puts LoRA on every encoder and decoder attention projection (rank unknown): peft's
        extra kernels per projection cost launches, which dominate eager steps. lora_B gets random values too."""
        bb, dev, rank = self.stack.model.backbone, self.device, self.s.lora_rank
        targets = M.attention_lora_targets(bb)
        M.inject_lora(bb, {name: rank for name in targets})
        with torch.no_grad():
            for name, param in bb.named_parameters():
                if ".lora_" in name:
                    param.data = param.data.to(dev, bb.dtype).normal_(0.0, 0.02)
                    param.requires_grad_(False)
        self.transcribe_case(
            f"1x30s-8steps-lora{rank}", 1, 8, lora_rank=rank, lora_modules=len(targets),
            note=f"peft LoRA r={rank} on {len(targets)} attention projections (encoder and decoder)",
        )  # fmt: skip

    def graph_case(self, segments: int) -> None:
        """Pipeline.transcribe with asr.fast.denoise (decoder step as a CUDA graph) in place of asr.decoding's."""
        cuda = self.device.startswith("cuda")
        with graphed_pipeline(self.stack.pipeline):
            first = None
            if cuda:  # the capture happens in the first call for each batch size: time it on its own
                sync(self.device)
                t = time.perf_counter()
                self.stack.pipeline.transcribe(self.audio(segments), steps=8, seed=0)
                sync(self.device)
                first = time.perf_counter() - t
            note = "asr.fast: prefill and decoder step replayed as CUDA graphs" if cuda else "CPU: eager fallback"
            self.transcribe_case(f"{segments}x30s-8steps-cudagraph", segments, 8, note=note, first_call_s=first)

    def graphed_norecord(self) -> None:
        """1x30s-8steps-cudagraph without the per-step record: what recording costs on the graphed path."""
        with graphed_pipeline(self.stack.pipeline):
            self.transcribe_case(
                "1x30s-8steps-norecord-cudagraph", 1, 8, record_steps=False, warmup=max(1, self.s.warmup),
                note="record_steps=False; asr.fast CUDA graphs",
            )  # fmt: skip

    def check_graph_identical(self) -> None:
        wave = self.audio(4)
        ref = self.stack.pipeline.transcribe(wave, steps=8, seed=11)
        with graphed_pipeline(self.stack.pipeline):
            got = self.stack.pipeline.transcribe(wave, steps=8, seed=11)
        same = all(a.tokens == b.tokens for a, b in zip(ref.segments, got.segments, strict=True))
        same_steps = all(
            (a.steps.canvas == b.steps.canvas).all() and (a.steps.accepted == b.steps.accepted).all()
            for a, b in zip(ref.segments, got.segments, strict=True)
        )
        note = "4x30s, same seed: asr.fast (prefill and decoder step graphs) gives the eager tokens and canvases"
        self.add("check-cudagraph-identical", None, _peak(self.device), ok=bool(same and same_steps), steps=8, batch=4,
                 note=note)  # fmt: skip

    def _drop_graphs(self) -> None:
        fast.drop_runners(self.stack.model.backbone)
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # baselines

    def _prompt_ids(self, batch: int = 1) -> torch.Tensor:
        ids = self.stack.model.prompt.ids(self.stack.model.num_slots)
        return torch.tensor([ids] * batch, device=self.device)

    def _generate(self, name: str, warmup: int, note: str = "", **kwargs: Any) -> None:
        bb = self.stack.model.backbone
        ids = self._prompt_ids()

        def run():
            with torch.inference_mode():
                return bb.generate(
                    input_ids=ids, max_new_tokens=bb.config.canvas_length, max_denoising_steps=8, **kwargs
                )

        first = None
        if warmup and name.endswith("static-8steps") and self.device.startswith("cuda"):
            sync(self.device)
            t = time.perf_counter()
            run()
            sync(self.device)
            first = time.perf_counter() - t
            warmup -= 1
        timing = measure(run, self.device, self.s.repeats, warmup)
        out = timing.result
        self.add(
            name, timing.seconds, timing.peak_gb, steps=8, batch=1, segments=1, prompt_tokens=ids.shape[1],
            repeats=len(timing.samples), samples=timing.samples, first_call_s=first,
            new_tokens=int(out.sequences.shape[1] - ids.shape[1]),
            note="generate(input_ids=prompt) incl. its prefill; audio slots hold the placeholder id's embedding "
            "(same length, no whisper/projector)" + (f"; {kwargs}" if kwargs else "") + note,
        )  # fmt: skip

    def generate_eager(self) -> None:
        self._generate("baseline-generate-eager-8steps", self.s.warmup)

    def generate_static(self) -> None:
        if self.device.startswith("cuda"):
            # compile (reduce-overhead: CUDA graphs) happens on the first call; the graphs settle after a few
            self._generate("baseline-generate-static-8steps", 3, cache_implementation="static")
        else:
            self._generate("baseline-generate-static-8steps", self.s.warmup, note=" (CPU: torch.compile disabled)",
                           cache_implementation="static", disable_compile=True)  # fmt: skip

    def whisper_ar(self) -> None:
        """Autoregressive whisper-small (tiny config on a tiny run): waveform -> 100 forced tokens, 1 and 16 wide."""
        from transformers import WhisperForConditionalGeneration

        dev, fe = self.device, self.stack.pipeline.feature_extractor
        cfg = M.whisper_small_config() if self.stack.size == "real" else M.tiny_whisper_config()
        dtype = next(self.stack.model.whisper.parameters()).dtype
        with torch.device(dev):
            ar = WhisperForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
        chunks = [A.cut(self.audio(16), s) for s in A.split_on_silence(self.audio(16))]
        for batch in (1,) if self.s.quick else (1, 16):

            def run(b=batch):
                feats = fe(chunks[:b], sampling_rate=A.SAMPLE_RATE, return_tensors="pt").input_features
                with torch.inference_mode():
                    return ar.generate(feats.to(dev, dtype), min_new_tokens=100, max_new_tokens=100, do_sample=False)

            timing = measure(run, dev, self.s.repeats if batch == 1 else self.s.multi_repeats, self.s.warmup)
            name = "baseline-whisper-small-ar-100tok" + ("" if batch == 1 else f"-{batch}x")
            self.add(
                name, timing.seconds, timing.peak_gb, steps=None, batch=batch, segments=batch,
                per_segment_s=timing.seconds / batch, rtfx=batch * SEGMENT_SECONDS / timing.seconds,
                new_tokens=int(timing.result.shape[1]), repeats=len(timing.samples), samples=timing.samples,
                note="WhisperForConditionalGeneration, random weights, greedy, min=max=100 new tokens, "
                "from the waveform (features included)",
            )  # fmt: skip


def check_against_generate(device: str, steps: int = 8, batch: int = 2, seed: int = 1234) -> dict[str, Any]:
    """The tiny stack on ``device``: :func:`asr.decoding.denoise` must return generate()'s canvas for one seed."""
    import copy

    from .loading import build_tiny

    speech, _, _ = build_tiny(seed=0)
    speech = speech.to(device).eval()
    feats = torch.randn(batch, 80, 3000, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.inference_mode():
        embeds = speech.prompt_embeddings(speech.embed_audio(feats))
        head = speech.prefill(embeds[:, :-1])
        ref_cache = copy.deepcopy(head)
        ours_cache = speech.prefill(embeds[:, -1:], head)
    last = torch.full((batch, 1), speech.prompt.ids(speech.num_slots)[-1], device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    ours = denoise(speech.backbone, ours_cache, embeds.shape[1], batch, DenoiseOptions(steps=steps), gen)
    torch.manual_seed(seed)
    with torch.inference_mode():
        ref = speech.backbone.generate(
            input_ids=last, past_key_values=ref_cache, max_new_tokens=speech.canvas_length, max_denoising_steps=steps
        )
    canvas = speech.canvas_length
    same = torch.equal(ours.tokens, ref.sequences[:, -canvas:])
    return {"ok": bool(same), "steps": steps, "batch": batch, "note": "tiny stack: denoise() == generate(), same seed"}


# --- results files ---------------------------------------------------------------------------------------------------


def load_records(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() and path.read_text().strip() else []


def append_records(records: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Append ``records`` to the JSON list at ``path`` (records already there, same run and case, are skipped)."""
    existing = load_records(path)
    seen = {(r.get("run"), r.get("case")) for r in existing}
    merged = existing + [r for r in records if (r.get("run"), r.get("case")) not in seen]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


TARGETS = [  # issue 4, for real-size GPU runs: (case, what, limit in seconds)
    ("1x30s-8steps", "one 30 s segment, 8 steps, from the waveform", 0.25),
    ("20x30s-8steps", "20 x 30 s (10 min), 8 steps", 0.85),
    ("first-transcript", "first transcript after weights are on the GPU", 30.0),
]


def pipeline_path(cases: tuple[str, ...], run: list[dict[str, Any]]) -> tuple[str, ...]:
    """The cases as ``Pipeline`` runs them by default: on CUDA, batches of at most ``Pipeline.graph_max_batch``
    windows (``graph_max_batch_fused`` with the fused loop: runs whose records say ``sampling: fused``) replay CUDA
    graphs, so such cases are judged by their ``-cudagraph`` records where the run has all of them (a pair compared
    with each other is taken from the same path). A case's batch is its record's ``batch`` (else its window count)."""
    have = {r["case"] for r in run}
    batch = {r["case"]: r.get("batch") for r in run}
    fused = any(r.get("sampling") == "fused" for r in run)
    limit = Pipeline.graph_max_batch_fused if fused else Pipeline.graph_max_batch
    small = all(c[:1].isdigit() and (batch.get(c) or int(c.split("x", 1)[0])) <= limit for c in cases)
    graphed = tuple(f"{c}-cudagraph" for c in cases)
    return graphed if small and set(graphed) <= have else cases


def targets_table(run: list[dict[str, Any]]) -> list[str]:
    """Issue 4's targets against one real-size run's records, each on the path ``Pipeline`` takes by default."""
    by = {r["case"]: r for r in run}

    def seconds(*cases: str) -> tuple[list[float | None], str]:
        names = pipeline_path(cases, run)
        return [by.get(n, {}).get("seconds") for n in names], ", ".join(names)

    rows = []
    for case, what, limit in TARGETS:
        (value,), name = seconds(case)
        rows.append((what, f"<= {limit:g} s", _fmt(value, " s", 3), _met(value, limit), name))
    (five, sixty), names = seconds("1x30s-8steps-5words", "1x30s-8steps-60words")
    diff = abs(sixty - five) / five if five and sixty else None
    rows.append(("5- vs 60-word transcript", "within 5 %", _fmt(None if diff is None else 100 * diff, " %", 1),
                 _met(diff, 0.05), names))  # fmt: skip
    (rec, norec), names = seconds("1x30s-8steps", "1x30s-8steps-norecord")
    cost = (rec - norec) / norec if rec and norec else None
    rows.append(("cost of recording every step", "<= 5 %", _fmt(None if cost is None else 100 * cost, " %", 1),
                 _met(cost, 0.05), names))  # fmt: skip
    # Left out: baselines; profile-* (a profiled transcribe, timed by another case too; before commit 373aac0's run
    # it did not reset the peak and showed the case before it's); and where the run has the fused loop, the reference
    # loop's cases, which are not the default path: -refsampling and the decoder-step components (float32 logits).
    fused = any(r.get("sampling") == "fused" for r in run)
    skip = ("baseline", "profile-") + (("-refsampling", "decoder-step") if fused else ())
    peaks = [r["peak_gb"] for r in run if r.get("peak_gb") is not None and not any(k in r["case"] for k in skip)]
    peak = max(peaks) if peaks else None
    where = "all but baseline, profile" + (", -refsampling, decoder-step cases" if fused else " cases")
    rows.append(("peak GPU memory (project path)", "<= 60 GB", _fmt(peak, " GB", 2), _met(peak, 60.0), where))
    lines = ["| target | limit | measured | met | from |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    return lines


def write_md(records: list[dict[str, Any]], path: Path) -> str:
    """Regenerate the readable results table (newest run first) from ``records``; returns the text."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        runs.setdefault(r.get("run") or f"{r.get('date')}-{r.get('size')}", []).append(r)
    lines = [
        "# Benchmark results",
        "",
        "Generated from `bench/results.json` by `python -m asr.bench --write-md`; do not edit by hand.",
        "Random weights (speed does not depend on them), canvas 192. `seconds` is the median wall time of the",
        "whole case (all its segments); `peak GB` is `torch.cuda.max_memory_allocated()` during the case, weights",
        "included (not measured on the CPU). Tiny-stack CPU numbers track regressions only: they say nothing about",
        "GPU speed. See `bench/README.md` for what every case measures.",
    ]
    for run_id in sorted(runs, reverse=True):
        run = runs[run_id]
        head = run[0]
        lines += [
            "",
            f"## {head.get('size')} stack, {head.get('device')}, {head.get('date')}",
            "",
            f"commit {head.get('commit')}, torch {head.get('torch')}, transformers {head.get('transformers')}, "
            f"{head.get('dtype')}, canvas {head.get('canvas')}",
            *(["", f"Conditions: {head['conditions']}"] if head.get("conditions") else []),
            "",
            "| case | seconds | per 30 s segment | RTFx | steps (run) | batch | peak GB | note |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
        ]
        for r in run:
            steps = r.get("steps")
            steps_txt = "" if steps is None else str(steps)
            if r.get("steps_run") not in (None, steps):
                steps_txt += f" ({r['steps_run']})"
            note = r.get("error") or r.get("note") or ""
            if "ok" in r:
                note = ("PASS: " if r["ok"] else "FAIL: ") + note
            cells = [
                r["case"], _fmt(r.get("seconds")), _fmt(r.get("per_segment_s")), _fmt(r.get("rtfx"), "", 1),
                steps_txt, "" if r.get("batch") is None else str(r["batch"]), _fmt(r.get("peak_gb"), "", 2),
                note.replace("|", "/"),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        if head.get("size") == "real" and str(head.get("device", "")).lower().find("cpu") != 0:
            lines += ["", "Issue 4 targets:", "", *targets_table(run)]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def print_table(records: list[dict[str, Any]]) -> None:
    """A short table for the end of a (GPU) log."""
    print(f"\n{'case':<40} {'seconds':>9} {'per seg':>9} {'RTFx':>8} {'peak GB':>8}")
    for r in records:
        extra = r.get("error") or ("" if "ok" not in r else ("PASS" if r["ok"] else "FAIL"))
        print(
            f"{r['case']:<40} {_fmt(r.get('seconds')):>9} {_fmt(r.get('per_segment_s')):>9} "
            f"{_fmt(r.get('rtfx'), '', 1):>8} {_fmt(r.get('peak_gb'), '', 2):>8} {extra}"
        )
    if records and records[0].get("size") == "real":
        print("\n" + "\n".join(targets_table(records)))


def _fmt(value: float | None, unit: str = "", digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}" if abs(value) < 1000 else f"{value:.0f}{unit}"


def _met(value: float | None, limit: float) -> str:
    return "?" if value is None else ("yes" if value <= limit else "no")


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not isinstance(value, float) or math.isnan(value):
        return value
    return round(value, digits)


def _peak(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / GB if device.startswith("cuda") else None


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# --- command line --------------------------------------------------------------------------------------------------


def run(
    size: str,
    device: str,
    out: Path | None,
    quick: bool,
    check: bool = False,
    budget_s: float | None = None,
    threads: int | None = None,
    lora_rank: int = 0,
    only: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Build the stack, run every case, return the records (also written to ``out/results.json`` as they come)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(size, device, out, quick, check, budget_s, lora_rank, only)
    finally:
        torch.set_num_threads(previous_threads)


def _run(size: str, device: str, out: Path | None, quick: bool, check: bool, budget_s: float | None, lora_rank: int,
         only: list[str] | None):  # fmt: skip
    if size == "real" and not device.startswith("cuda"):
        raise SystemExit("--size real needs a CUDA GPU (the real-size stack is ~52 GB of bf16 weights)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU")
    cuda = device.startswith("cuda")
    settings = Settings(
        repeats=1 if quick else 5, multi_repeats=1 if quick else 3, warmup=0 if quick else 1,
        budget_s=budget_s, static_compile_s=240.0, check=check, quick=quick, lora_rank=lora_rank,
        only=frozenset(only) if only else None,
    )  # fmt: skip
    checks = []
    if check:
        t = time.perf_counter()
        result = check_against_generate(device)
        checks.append(
            {"case": "check-denoise-vs-generate", "seconds": None, "took_s": time.perf_counter() - t, **result}
        )
        print(f"check denoise == generate on {device}: {'PASS' if result['ok'] else 'FAIL'}", flush=True)
    print(f"building the {size} stack on {device} ...", flush=True)
    stack = build_stack(size, device)
    if size == "real":
        report = check_real_build(stack.model.backbone, stack.model.whisper, stack.model.projector)
        stack.info.update(tied_pairs=report["pairs"], untied=len(report["untied"]),
                          unique_param_gb=report["unique_param_gb"], nan_left=report["nan"][:10],
                          buffer_problems=report["buffer_problems"])  # fmt: skip
        print(f"real build: {json.dumps({k: v for k, v in report.items() if k != 'untied'})}", flush=True)
        note = (
            f"{report['pairs']} tied pairs, {len(report['untied'])} untied; {len(report['nan'])} tensors left NaN; "
            f"buffer problems {report['buffer_problems']}"
        )
        checks.append({"case": "check-real-build", "seconds": None, "ok": report["ok"], "steps": None, "note": note})
    bench = Bench(stack, settings, out)
    if cuda:
        print(f"weights on the GPU: {stack.info.get('weights_gb', 0):.2f} GB, built in {stack.build_seconds:.1f} s")
    for c in checks:
        bench.add(c.pop("case"), c.pop("seconds"), None, **c)
    return bench.run_all()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asr.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--size", choices=["tiny", "real"], default="tiny")
    p.add_argument("--out", type=Path, help="write this run's results.json and RESULTS.md here, not into bench/")
    p.add_argument("--quick", action="store_true", help="one repeat, no warm-up (for tests)")
    p.add_argument("--check", action="store_true", help="correctness checks before/among the timings")
    p.add_argument("--budget-s", type=float, help="skip cases that would end past this many seconds")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: 1 on the CPU, torch's own on a GPU)")
    p.add_argument("--lora-rank", type=int, default=16, help="rank of the final LoRA case (0: leave it out)")
    p.add_argument("--cases", help="comma-separated case groups to run (as named in Bench.run_all), e.g. "
                   "baseline-generate-static-8steps,words")  # fmt: skip
    p.add_argument("--merge", type=Path, nargs="+", help="append these results.json files to bench/results.json")
    p.add_argument("--write-md", action="store_true", help="regenerate bench/RESULTS.md from bench/results.json")
    args = p.parse_args(argv)
    if args.merge:
        records = []
        for f in args.merge:
            records += load_records(f)
        write_md(append_records(records, RESULTS_JSON), RESULTS_MD)
        print(f"{len(records)} records merged into {RESULTS_JSON}; {RESULTS_MD} rewritten")
        return 0
    if args.write_md:
        write_md(load_records(RESULTS_JSON), RESULTS_MD)
        print(f"{RESULTS_MD} rewritten")
        return 0
    threads = args.threads or (1 if not args.device.startswith("cuda") else None)
    only = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    records = run(
        args.size, args.device, args.out, args.quick, args.check, args.budget_s, threads, args.lora_rank, only
    )
    if args.out is not None:
        write_md(records, args.out / "RESULTS.md")
    else:
        write_md(append_records(records, RESULTS_JSON), RESULTS_MD)
    print_table(records)
    failed = [r["case"] for r in records if r.get("ok") is False]
    if failed:
        print(f"FAILED checks: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
