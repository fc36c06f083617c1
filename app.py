"""Diffusion Gemma ASR: the Gradio Space (also ``python app.py`` locally, and an API through ``gradio_client``).

DiffusionGemma denoises a transcript canvas, conditioned on Whisper audio embeddings. The Space offers upload and
microphone transcription, a side-by-side comparison of step counts, and a denoising visualiser that replays every
step of one model call in the browser.

    python app.py                          # the real model (needs HF_TOKEN for the gated repos and ~60 GB of GPU);
                                           # where it cannot load, the small model `mini` serves (CPU, offline)
    python app.py --model mini             # the small model trained by this project, directly
    python app.py --model tiny-random      # tiny random-weight stack: starts offline in seconds (text is noise)
    ASR_MODEL=tiny-random python app.py    # the same, as on a Space

ZeroGPU: ``import spaces`` comes first; the weights are moved to CUDA at module level (inside :func:`asr.load`);
only :func:`run_model` holds a GPU, sized by :func:`gpu_seconds`, and it returns CPU objects. Audio is decoded and
checked on the CPU before any GPU is claimed, and events refuse empty or too-long audio in their ``validator``.
"""

import spaces  # noqa: I001  (must come before anything that touches CUDA: ZeroGPU patches torch on import)

import argparse
import html
import math
import os
import re
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

import asr
from asr import audio as A
from spaces.config import Config as _SpacesConfig

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"

MIN_STEPS, MAX_STEPS, DEFAULT_STEPS = 1, 48, 16
COMPARE_CHOICES = [1, 2, 4, 8, 12, 16, 24, 32, 48]
DEFAULT_COMPARE = [4, 8, 32]  # with the slider's 16: the 4 / 8 / 16 / 32 trade-off
MAX_COMPARE_RUNS = 8
DEFAULT_SEED = 0
MAX_SEED = 2**31 - 1


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# Longest audio one request may carry (the ZeroGPU quota is counted in seconds of GPU time).
MAX_AUDIO_SECONDS = _env_float("ASR_MAX_AUDIO_SECONDS", 600.0)
# What to run when the requested model cannot be loaded, first that loads of a comma-separated list: the small model
# trained by this project (asr/mini), else the random tiny stack ("none": no model, every request answers why).
FALLBACK_MODEL = os.environ.get("ASR_FALLBACK_MODEL", "mini,tiny-random")
# How many model requests run at once (each claims its own GPU on ZeroGPU; locally they share the pipeline's lock).
CONCURRENCY = max(1, int(_env_float("ASR_CONCURRENCY", 4)))
ON_ZEROGPU = bool(_SpacesConfig.zero_gpu)
# GPU-time estimate per denoising step of one batch of up to 16 windows (bf16 backbone; see gpu_seconds).
# bench/RESULTS.md (H200, eager, random bf16 weights of the real size): 0.10 s per step for one window, ~0.21 s for a
# batch of 16 (16x30s-8steps 2.00 s, prefill included); rounded up, and gpu_seconds adds 50 % and a 20 s floor.
GPU_SECONDS_PER_STEP = _env_float("ASR_GPU_SECONDS_PER_STEP", 0.25)


# --- the model ---------------------------------------------------------------------------------------------------

# Pipelines loaded at start-up, by model name. Written only while the module loads (load_model), read-only while
# serving: requests share the weights, never per-request state.
_PIPELINES: dict[str, asr.Pipeline] = {}


@dataclass(frozen=True)
class ModelState:
    """Which model was asked for, which one serves (``key``), and why the requested one could not load."""

    requested: str
    key: str | None
    error: str | None = None

    @property
    def pipe(self) -> asr.Pipeline | None:
        return _PIPELINES.get(self.key) if self.key else None

    @property
    def is_fallback(self) -> bool:
        return self.key is not None and self.key != self.requested


def load_model(requested: str, fallback: str | None = FALLBACK_MODEL) -> ModelState:
    """Load ``requested``; when it cannot load, keep the app up on ``fallback`` and remember why."""
    try:
        # asr.load refuses the 26B backbone at once when "auto" finds no GPU; ASR_ALLOW_CPU=1 asks for the CPU anyway
        device = "cpu" if os.environ.get("ASR_ALLOW_CPU") == "1" else "auto"
        _PIPELINES[requested] = asr.load(requested, device=device)
        if ON_ZEROGPU:  # CUDA graphs hold the weights' addresses, which ZeroGPU may change between calls
            _PIPELINES[requested].cuda_graphs = False
        return ModelState(requested, requested)
    except asr.ModelLoadError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - e.g. CUDA out of memory while moving weights: say so, keep serving
        error = f"{type(exc).__name__}: {exc}"
    print(f"app: could not load {requested}: {error}", file=sys.stderr)
    for name in (m.strip() for m in (fallback or "").split(",")):
        if not name or name.lower() == "none" or name == requested:
            continue
        try:
            _PIPELINES[name] = asr.load(name)
            print(f"app: serving the fallback model {name} instead", file=sys.stderr)
            return ModelState(requested, name, error)
        except Exception as exc:  # noqa: BLE001
            error += f" (the fallback {name} could not load either: {exc})"
    return ModelState(requested, None, error)


def what_to_do(error: str) -> str:
    """A next step for a model-loading error, in words."""
    low = error.lower()
    if "gated" in low or "hf_token" in low or "401" in low or "403" in low:
        return (
            "accept the model terms on its Hugging Face page with your account, then set `HF_TOKEN` "
            "(on a Space: Settings → Variables and secrets) to a token of that account, and restart."
        )
    if "memory" in low:
        return (
            'the bf16 backbone needs about 52 GB of GPU memory: use a larger GPU (on ZeroGPU, `size="xlarge"`), '
            "or set `ASR_MODEL=mini` for the small model trained by this project (it runs on a CPU)."
        )
    if "cannot reach" in low or "offline" in low or "connection" in low:
        return (
            "connect this machine to the Hugging Face hub once (the weights are cached), or point `ASR_MODEL` at a "
            "local adapter folder; `ASR_MODEL=mini` (the small model trained by this project) needs no network."
        )
    if "not in this installation" in low:
        return (
            "that model's files are not on this machine: build or download them first (see the README), or choose "
            "another model with `ASR_MODEL` / `--model` (a hub id, an adapter folder, `mini` or `tiny-random`)."
        )
    if "neither a local file" in low or "not found" in low or "holds no" in low:
        return (
            "set `ASR_MODEL` (or `--model`) to a hub id such as `interfaze-ai/diffusion-gemma-asr-small`, a folder "
            "or `.pt` file with the adapter, `mini` (the small model trained by this project) or `tiny-random`."
        )
    if "cuda" in low:
        return (
            "this machine has no usable CUDA GPU: run on a GPU machine, or set `ASR_MODEL=mini` (the small model "
            "trained by this project runs on a CPU)."
        )
    return "read the reason above, fix it, and restart the app; `ASR_MODEL=tiny-random` always starts."


SMALL_MODEL_NOTE = (
    "<b>the small model trained by this project</b> (whisper tiny.en and a 7 M-parameter DiffusionGemma: the same "
    "pipeline and denoiser), far less accurate than the real model; its word error rates are in the README."
)


def model_status(state: ModelState) -> str:
    """The status line (HTML): which model, on which device, or why the requested model is not serving."""
    pipe = state.pipe
    where = ""
    if pipe is not None:
        dtype = str(next(pipe.model.parameters()).dtype).removeprefix("torch.")
        zero = " on ZeroGPU" if ON_ZEROGPU else ""
        where = f"device <code>{html.escape(pipe.device)}</code>{zero} · <code>{dtype}</code>"
    if state.error is None and pipe is not None:
        note = ""
        if pipe.is_small:
            note = f" · {SMALL_MODEL_NOTE}"
        if pipe.is_random:
            note = (
                " · <b>random weights</b>: this stack only exercises the interface, its transcripts are noise "
                "by construction"
            )
        cls = "warn" if pipe.is_random else "ok"
        icon = "🧪" if pipe.is_random else "✅"
        return (
            f'<div class="asr-status {cls}">{icon} Model <code>{html.escape(state.requested)}</code> · {where}'
            f"{note}</div>"
        )
    reason = html.escape(state.error or "unknown error")
    todo = _md_code(html.escape(what_to_do(state.error or "")))
    if pipe is not None and pipe.is_random:
        serving = (
            f"Serving <code>{html.escape(state.key or '')}</code> instead ({where}): <b>random weights, its "
            "transcripts are noise</b>, it only lets you try the interface."
        )
    elif pipe is not None:
        serving = f"Serving <code>{html.escape(state.key or '')}</code> instead ({where}): {SMALL_MODEL_NOTE}"
    else:
        serving = "No model is serving: transcription requests will answer with this reason."
    return (
        f'<div class="asr-status error">⚠️ <b>Could not load <code>{html.escape(state.requested)}</code></b>: '
        f"{reason}<br><b>What to do</b>: {todo}<br>{serving}</div>"
    )


def _md_code(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def gpu_seconds(model_key, wave, steps, seed=None, record_steps=True, progress=None) -> int:
    """ZeroGPU ``duration`` of one :func:`run_model` call: a function of the audio length and the step counts.

    The audio is cut into windows of at most 30 s, denoised together in batches of 16; each step is one forward
    pass of the backbone over a batch. A short request gets a better place in the ZeroGPU queue.
    """
    windows = max(1, math.ceil(len(wave) / A.SAMPLE_RATE / A.WINDOW_SECONDS))
    batches = math.ceil(windows / 16)
    per_run = [batches * (2.0 + GPU_SECONDS_PER_STEP * int(s)) for s in steps]  # encoder + prefill, then the steps
    return int(min(300, max(20, 10 + 1.5 * sum(per_run))))


@spaces.GPU(duration=gpu_seconds, size="xlarge")
def run_model(
    model_key: str,
    wave: np.ndarray,
    steps: list[int],
    seed: int,
    record_steps: bool = True,
    progress: gr.Progress | None = None,
) -> list[asr.Transcript]:
    """The only code that needs a GPU: transcribe 16 kHz ``wave`` once per step count, with the same seed.

    Everything it returns (transcripts with their step records) is already on the CPU.
    """
    pipe = _PIPELINES[model_key]
    results = []
    for i, count in enumerate(steps):
        report = None
        if progress is not None:

            def report(fraction: float, message: str, i=i, count=count) -> None:
                progress((i + fraction) / len(steps), desc=f"{count} steps: {message}")

        results.append(pipe.transcribe(wave, steps=int(count), seed=seed, record_steps=record_steps, progress=report))
    return results


# --- requests ----------------------------------------------------------------------------------------------------


def check_audio(path, max_seconds: float) -> str | None:
    """Why ``path`` cannot be transcribed, read from the file's header only (cheap: no decoding, no GPU); or None.

    What the header cannot tell (a file that is not audio at all) is refused by the decoder, still before any GPU
    is claimed.
    """
    if path is None or path == "":
        return "No audio yet: upload a file or record with the microphone first."
    p = Path(path)
    if not p.is_file():
        return "The uploaded audio is no longer on the server; please upload it again."
    size = p.stat().st_size
    if size == 0:
        return f"{p.name} is empty (0 bytes)."
    if size > A.MAX_FILE_BYTES:
        return f"{p.name} is {size / 2**20:.0f} MB; the limit is {A.MAX_FILE_BYTES // 2**20} MB."
    try:
        import soundfile as sf

        info = sf.info(str(p))
    except Exception:  # noqa: BLE001 - not readable from the header: the decoder decides (with a clear message)
        return None
    if info.frames == 0:
        return f"{p.name} contains no audio samples."
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds > max_seconds:
        return (
            f"The audio is {_duration(seconds)} long; this app takes up to {_duration(max_seconds)} per request. "
            "Trim it, or run it locally with `python -m asr FILE` (no length limit but 4 h)."
        )
    return None


def check_steps(steps) -> str | None:
    try:
        value = float(steps)
    except (TypeError, ValueError):
        return f"Steps must be a whole number from {MIN_STEPS} to {MAX_STEPS}."
    if value != int(value) or not MIN_STEPS <= value <= MAX_STEPS:
        return f"Steps must be a whole number from {MIN_STEPS} to {MAX_STEPS} (got {steps})."
    return None


def check_seed(seed) -> str | None:
    if seed is None or seed == "":
        return None
    try:
        value = float(seed)
    except (TypeError, ValueError):
        return "The seed must be a whole number (or -1 for a random one)."
    if value != int(value) or not -1 <= value <= MAX_SEED:
        return f"The seed must be a whole number from 0 to {MAX_SEED}, or -1 for a random one (got {seed})."
    return None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _seed(seed) -> int:
    if seed is None or seed == "" or int(float(seed)) < 0:
        return secrets.randbits(31)
    return int(float(seed))


def _validation(*checks: str | None) -> list[dict]:
    return [gr.validate(message is None, message or "") for message in checks]


def _decode(audio, max_seconds: float) -> np.ndarray:
    """Decode on the CPU (before any GPU is claimed); unusable input becomes a clear error in the UI and API."""
    problem = check_audio(audio, max_seconds)
    if problem:
        raise gr.Error(problem, title="Cannot use this audio")
    try:
        return A.load_audio(audio, max_seconds=max_seconds)
    except asr.AudioError as exc:
        # the server's upload folder means nothing to the visitor: keep the file name only
        message = str(exc).replace(str(Path(audio).parent) + os.sep, "")
        raise gr.Error(message, title="Cannot use this audio") from exc


def _run(state: ModelState, audio, steps: list[int], seed, record_steps: bool, progress, max_seconds: float):
    if state.pipe is None:
        raise gr.Error(
            f"No model is loaded: {state.error}. What to do: {what_to_do(state.error or '')}", title="No model"
        )
    if progress is not None:
        progress(0.0, desc="decoding audio")
    wave = _decode(audio, max_seconds)
    seed = _seed(seed)
    if progress is not None:
        progress(0.02, desc="waiting for the GPU" if ON_ZEROGPU else "running the model")
    try:
        return run_model(state.key, wave, [int(s) for s in steps], seed, record_steps, progress=progress)
    except gr.Error:
        raise  # ZeroGPU quota / time-out messages arrive as gr.Error already
    except asr.AudioError as exc:
        raise gr.Error(str(exc), title="Cannot use this audio") from exc
    except Exception as exc:  # noqa: BLE001
        name = type(exc).__name__
        hint = " Try shorter audio or fewer steps." if "memory" in str(exc).lower() or "OutOfMemory" in name else ""
        raise gr.Error(f"The model run failed ({name}: {exc}).{hint}", title="Transcription failed") from exc


def transcript_dict(transcript: asr.Transcript, steps: bool, pipe: asr.Pipeline | None = None) -> dict:
    """The JSON the API returns: :meth:`asr.Transcript.to_dict` plus ``steps_run`` per segment.

    With ``steps=True`` each step also carries ``draft_text`` (its argmax canvas decoded, as the transcript would
    read if denoising stopped there), each segment read jointly with the CTC head (``ctc_weight`` > 0: ``mini``) the
    ``final_canvas`` its text was read from, ``token_pieces`` maps every token id in the record to its text, and
    ``token_names`` gives the vocabulary entry of the ids whose text alone is empty or not valid UTF-8.
    """
    out = transcript.to_dict(steps=steps)
    ids: set[int] = set()
    for seg, seg_out in zip(transcript.segments, out["segments"], strict=True):
        seg_out["steps_run"] = len(seg.steps) if seg.steps is not None else None
        if steps and seg.steps is not None and pipe is not None:
            for step in seg_out.get("steps", []):
                step["draft_text"] = pipe.decode(step["argmax"])
            for name in ("canvas", "sampled", "argmax"):
                ids.update(int(i) for i in np.unique(getattr(seg.steps, name)))
            ids.update(int(i) for i in seg.final_canvas or [])  # the joint reading with the CTC head
    if steps and pipe is not None:
        ordered = sorted(ids)
        pieces = pipe.token_strings(ordered)
        out["token_pieces"] = dict(zip(map(str, ordered), pieces, strict=True))
        # a token that decodes to nothing readable alone (a lone byte, a partial character) is shown by its name in
        # the vocabulary (e.g. "<0xE3>"): the real token, not a substitute
        unreadable = [i for i, p in zip(ordered, pieces, strict=True) if p == "" or "\ufffd" in p]
        if unreadable:
            names = pipe.tokenizer.convert_ids_to_tokens(unreadable)
            # (an id the tokenizer has no entry for, as in the tiny stack's spare vocabulary, is shown by its number)
            out["token_names"] = {
                str(i): n if n is not None else f"#{i}" for i, n in zip(unreadable, names, strict=True)
            }
    return out


# --- rendering (CPU, after the model call) -----------------------------------------------------------------------


def _clock(seconds: float) -> str:
    minutes, sec = divmod(max(0.0, float(seconds)), 60)
    return f"{int(minutes)}:{sec:05.2f}"


def _timing_text(result: dict) -> str:
    t = result.get("timings") or {}
    rtfx = t.get("rtfx")
    parts = [
        f"🎧 audio <b>{t.get('audio_seconds', 0):.2f} s</b>",
        f"⏱️ wall <b>{t.get('wall_seconds', 0):.2f} s</b>",
        f"⚡ RTFx <b>{rtfx:.1f}</b>" if rtfx else "⚡ RTFx –",
        f"{result.get('steps')} steps",
        f"seed {result.get('seed')}",
    ]
    if result.get("ctc_weight"):
        spelled = ", words spelled from its lexicon" if result.get("lexicon") else ""
        parts.append(f"read jointly with the CTC head (weight {result['ctc_weight']:g}{spelled})")
    return " · ".join(parts)


def result_info(result: dict | None) -> str:
    """The line under a transcript: timing (audio s, wall s, RTFx), no-speech notice, random-weights warning."""
    if not result:
        return ""
    lines = [f'<div class="asr-timing">{_timing_text(result)}</div>']
    if result.get("no_speech"):
        lines.append(
            '<div class="asr-note nospeech">🔇 <b>No speech detected.</b> The audio seems to hold only silence or '
            "noise, so nothing was transcribed (rather than inventing text).</div>"
        )
    if "random weights" in str(result.get("model", "")):
        lines.append(
            '<div class="asr-note random">🧪 Random-weight model: this text is noise by construction; it shows the '
            "interface, not the model's accuracy.</div>"
        )
    return "".join(lines)


def segment_rows(result: dict | None) -> list[list]:
    if not result:
        return []
    return [[_clock(s["start"]), _clock(s["end"]), s.get("steps_run"), s["text"]] for s in result.get("segments", [])]


def transcript_from_dict(result: dict) -> asr.Transcript:
    t = result.get("timings") or {}
    return asr.Transcript(
        segments=[asr.Segment(start=s["start"], end=s["end"], text=s["text"]) for s in result.get("segments", [])],
        timings=asr.Timings(audio_seconds=t.get("audio_seconds", 0.0), wall_seconds=t.get("wall_seconds", 0.0)),
        model=result.get("model", ""),
        steps=result.get("steps", 0),
        seed=result.get("seed"),
    )


def write_downloads(result: dict | None, audio, block: gr.File) -> list[str]:
    """``.txt``, ``.srt`` and ``.vtt`` of ``result``, named after the audio, handed to Gradio's cache.

    They are written in a private temporary folder (removed on return) and copied into the app's file cache, which
    ``delete_cache`` empties; nothing is written to a fixed path and nothing of ours is left in the temp folder.
    """
    if not result or not result.get("segments"):
        return []
    transcript = transcript_from_dict(result)
    stem = re.sub(r"[^\w.-]+", "_", Path(str(audio or "transcript")).stem)[:60] or "transcript"
    paths = []
    with tempfile.TemporaryDirectory(prefix="asr-app-") as tmp:
        for fmt in ("txt", "srt", "vtt"):
            path = Path(tmp) / f"{stem}.{fmt}"
            path.write_text(transcript.format(fmt), encoding="utf-8")
            paths.append(block.move_resource_to_block_cache(path))
    return paths


def compare_cards(result: dict | None, highlight: int | None = None) -> str:
    """Side-by-side cards of a step comparison: steps, steps run, wall time, RTFx, text."""
    if not result or not result.get("runs"):
        return (
            '<div class="cmp-empty">Run a comparison to see the same audio denoised with different step counts.</div>'
        )
    runs = result["runs"]
    fastest = min(r["timings"]["wall_seconds"] for r in runs)
    cards = []
    for r in runs:
        t = r["timings"]
        ran = r.get("steps_run")
        ran_text = f" · stopped early after {ran}" if ran is not None and ran < r["steps"] else ""
        text = html.escape(r["text"]) if r["text"] else '<i class="muted">no speech detected</i>'
        mark = " mine" if highlight is not None and r["steps"] == highlight else ""
        rel = t["wall_seconds"] / fastest if fastest > 0 else 1.0
        rtfx = f"{t['rtfx']:.1f}" if t.get("rtfx") else "–"
        cards.append(
            f'<div class="cmp-card{mark}" data-steps="{r["steps"]}"><div class="cmp-head"><span class="cmp-steps">'
            f'{r["steps"]} steps</span><span class="cmp-time">{t["wall_seconds"]:.2f} s</span></div>'
            f'<div class="cmp-meta">RTFx {rtfx} · {rel:.1f}× the fastest{ran_text}</div>'
            f'<div class="cmp-bar"><span style="width:{min(100, 100 * fastest / max(t["wall_seconds"], 1e-9)):.0f}%">'
            f'</span></div><div class="cmp-text">{text}</div></div>'
        )
    audio_s = runs[0]["timings"]["audio_seconds"]
    head = (
        f'<div class="cmp-caption">{audio_s:.2f} s of audio · seed {result.get("seed")} for every run · the same '
        "audio embeddings, only the number of denoising steps changes</div>"
    )
    return head + '<div class="cmp-grid">' + "".join(cards) + "</div>"


# --- the denoising player (client side) --------------------------------------------------------------------------

PLAYER_TEMPLATE = '<div class="dv" tabindex="0"></div>'

PLAYER_CSS = """
.dv { font-size: 14px; outline: none; }
.dv .dv-empty { padding: 28px; text-align: center; color: var(--body-text-color-subdued); border: 1px dashed
  var(--border-color-primary); border-radius: 10px; }
.dv .dv-bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 8px; }
.dv .dv-bar button { min-width: 36px; height: 34px; border-radius: 8px; border: 1px solid var(--border-color-primary);
  background: var(--button-secondary-background-fill); color: var(--body-text-color); cursor: pointer;
  font-size: 15px; padding: 0 10px; }
.dv .dv-bar button.dv-play { background: var(--button-primary-background-fill);
  color: var(--button-primary-text-color); min-width: 86px; font-weight: 600; }
.dv .dv-scrub { flex: 1 1 220px; accent-color: var(--color-accent); }
.dv .dv-label { font-variant-numeric: tabular-nums; font-weight: 600; min-width: 104px; }
.dv select, .dv label { font-size: 13px; color: var(--body-text-color); }
.dv input[type=checkbox] { appearance: auto; -webkit-appearance: checkbox; background-image: none; width: 14px;
  height: 14px; accent-color: var(--color-accent); vertical-align: middle; margin: 0 3px 0 0; }
.dv select { border-radius: 6px; padding: 3px 6px; background: var(--input-background-fill);
  border: 1px solid var(--border-color-primary); }
.dv .dv-stats { font-size: 13px; color: var(--body-text-color-subdued); margin: 2px 0 8px; }
.dv .dv-chart-label { font-size: 11px; color: var(--body-text-color-subdued); }
.dv .dv-chart { display: flex; align-items: flex-end; gap: 2px; height: 46px; margin: 4px 0 10px;
  padding: 3px; border-radius: 6px; background: var(--background-fill-secondary); }
.dv .dv-chart span { flex: 1; min-width: 3px; border-radius: 2px 2px 0 0; background: #a5b4fc; cursor: pointer;
  opacity: .75; }
.dv .dv-chart span.cur { background: #4f46e5; opacity: 1; }
.dv .dv-chart span.joint { background: #f9a8d4; }
.dv .dv-chart span.joint.cur { background: #db2777; }
.dv .tok.chg { border-color: #db2777; box-shadow: 0 0 0 2px rgba(219,39,119,.35); }
.dv .dv-canvas { display: flex; flex-wrap: wrap; gap: 4px; line-height: 1.15; }
.dv .tok { display: inline-flex; flex-direction: column; align-items: stretch; border-radius: 6px;
  border: 2px solid hsl(var(--h) 55% 38%); background: hsl(var(--h) 80% 88%); color: #111827; min-width: 18px;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; overflow: hidden; }
.dv .tok .out { padding: 2px 5px; white-space: pre; text-align: center; }
.dv .tok .in { padding: 1px 5px; white-space: pre; font-size: 10.5px; color: #4b5563; background: rgba(255,255,255,.55);
  border-bottom: 1px solid rgba(0,0,0,.08); text-align: center; }
.dv.noinput .tok .in { display: none; }
.dv .tok.ren { border-style: dashed; border-color: #6b7280; background: hsl(var(--h) 40% 93%); }
.dv .tok.ren .out { color: #6b7280; text-decoration: line-through; text-decoration-color: rgba(107,114,128,.6); }
.dv .tok .ctl { color: #9333ea; font-size: 11px; }
.dv .dv-draft { margin-top: 10px; padding: 8px 10px; border-radius: 8px; background: var(--background-fill-secondary);
  white-space: pre-wrap; word-break: break-word; }
.dv .dv-draft b { color: var(--body-text-color-subdued); font-weight: 600; margin-right: 6px; }
.dv .dv-legend { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; font-size: 12px;
  color: var(--body-text-color-subdued); margin: 6px 0 10px; }
.dv .dv-legend .grad { display: inline-block; width: 110px; height: 10px; border-radius: 5px; vertical-align: middle;
  background: linear-gradient(90deg, hsl(8 80% 80%), hsl(52 80% 80%), hsl(138 80% 80%)); margin: 0 4px; }
.dv .dv-legend .tok { font-size: 11px; vertical-align: middle; }
.dv .dv-seg { font-size: 12px; color: var(--body-text-color-subdued); margin: 8px 0 4px; }
"""

PLAYER_JS = r"""
const root = element.querySelector('.dv');
let data = null, frame = 0, seg = 0, timer = null, speed = 1, showInput = true;
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;',
  "'": '&#39;'}[c]));
// a token's text, with invisible characters made visible (the tokens themselves are shown as they are)
function piece(id) {
  const p = data.token_pieces ? data.token_pieces[String(id)] : undefined;
  const name = data.token_names ? data.token_names[String(id)] : undefined;
  if (name !== undefined) return '<span class="ctl">' + esc(name) + '</span>';
  if (p === undefined) return '<span class="ctl">#' + id + '</span>';
  if (p === '') return '<span class="ctl">∅</span>';
  let out = '';
  for (const ch of p) {
    const c = ch.codePointAt(0);
    if (ch === '\n') out += '<span class="ctl">↵</span>';
    else if (ch === '\t') out += '<span class="ctl">⇥</span>';
    else if (c < 32 || (c >= 127 && c < 160)) {
      out += '<span class="ctl">\\x' + c.toString(16).padStart(2, '0') + '</span>';
    }
    else out += esc(ch);
  }
  if (p.trim() === '') out = out.replace(/ /g, '␣');
  return out;
}
function plain(id) {
  const p = data.token_pieces ? data.token_pieces[String(id)] : undefined;
  const name = data.token_names ? data.token_names[String(id)] : undefined;
  return (p === undefined ? '' : JSON.stringify(p)) + (name !== undefined ? ' (token ' + name + ')' : '') + ' #' + id;
}
function segments() { return (data && data.segments) ? data.segments.filter((s) => s.steps && s.steps.length) : []; }
// a segment read jointly with the CTC head (ctc_weight > 0) gets one more frame after its last step: that reading
function frames() { const s = segments()[seg]; return s ? s.steps.length + (s.final_canvas ? 1 : 0) : 0; }
function stop() { if (timer) { clearInterval(timer); timer = null; } const b = root.querySelector('.dv-play');
  if (b) b.textContent = '▶ Play'; }
function play() {
  if (frame >= frames() - 1) frame = 0;
  stop();
  const b = root.querySelector('.dv-play'); if (b) b.textContent = '⏸ Pause';
  timer = setInterval(() => { if (frame >= frames() - 1) { stop(); return; } frame += 1; draw(); }, 450 / speed);
  draw();
}
function drawJoint(s) {
  const st = s.steps[s.steps.length - 1]; const fin = s.final_canvas; const L = fin.length; let changed = 0;
  const cells = [];
  for (let p = 0; p < L; p++) {
    const c = fin[p] !== st.argmax[p]; changed += c ? 1 : 0;
    const h = Math.round(8 + 130 * Math.max(0, Math.min(1, Number(st.confidence[p]))));
    const tip = 'position ' + p + '\nlast step\'s draft: ' + plain(st.argmax[p]) + '\njoint reading: ' + plain(fin[p]) +
      (c ? '\nchanged by the joint reading' : '\nas the last draft');
    cells.push('<span class="tok acc' + (c ? ' chg' : '') + '" style="--h:' + h + '" title="' + esc(tip) + '">' +
      '<span class="in">' + piece(st.argmax[p]) + '</span><span class="out">' + piece(fin[p]) + '</span></span>');
  }
  root.querySelector('.dv-label').textContent = 'Joint reading';
  root.querySelector('.dv-canvas').innerHTML = cells.join('');
  root.querySelector('.dv-stats').textContent = 'the last step\'s log-probabilities + ' + data.ctc_weight +
    ' × the CTC head\'s, ' + (data.lexicon ? 'words spelled from the model\'s lexicon (a beam search over the ' +
    'positions)' : 'per position') + ' (small grey line: the last draft) · ' + changed + ' of ' + L +
    ' positions changed · this reading is the transcript';
  root.querySelector('.dv-draft').innerHTML = '<b>Transcript</b>' + (s.text ? esc(s.text) : '<i>(empty)</i>');
}
function draw() {
  const segs = segments(); const s = segs[seg]; if (!s) return;
  const n = s.steps.length; frame = Math.max(0, Math.min(frame, frames() - 1));
  root.dataset.frame = String(frame);
  root.querySelector('.dv-scrub').value = String(frame);
  root.querySelectorAll('.dv-chart span').forEach((b, i) => b.classList.toggle('cur', i === frame));
  if (frame === n) { drawJoint(s); return; }
  const st = s.steps[frame];
  root.querySelector('.dv-label').textContent = 'Step ' + (frame + 1) + ' / ' + n;
  const L = st.argmax.length; let acc = 0, conf = 0;
  const cells = [];
  for (let p = 0; p < L; p++) {
    const a = !!st.accepted[p]; const c = Number(st.confidence[p]); acc += a ? 1 : 0; conf += c;
    const h = Math.round(8 + 130 * Math.max(0, Math.min(1, c)));
    const tip = 'position ' + p + '\ninput canvas: ' + plain(st.canvas[p]) +
      '\ndraft (argmax): ' + plain(st.argmax[p]) + '\nsampled: ' + plain(st.sampled[p]) +
      '\nconfidence ' + c.toFixed(3) + ' · entropy ' + Number(st.entropy[p]).toFixed(3) +
      '\n' + (a ? 'accepted (kept for the next step)' : 're-noised (replaced by a random token for the next step)');
    cells.push('<span class="tok ' + (a ? 'acc' : 'ren') + '" style="--h:' + h + '" title="' + esc(tip) + '">' +
      '<span class="in">' + piece(st.canvas[p]) + '</span><span class="out">' + piece(st.argmax[p]) + '</span></span>');
  }
  root.querySelector('.dv-canvas').innerHTML = cells.join('');
  root.querySelector('.dv-stats').textContent = 'temperature ' + Number(st.temperature).toFixed(2) + ' · accepted ' +
    acc + ' / ' + L + ' (' + Math.round(100 * acc / Math.max(1, L)) + '%) · mean confidence ' +
    (conf / Math.max(1, L)).toFixed(3) + (frame < n - 1 ? '' : s.final_canvas ?
      ' · final step: the transcript reads this draft jointly with the CTC head (next frame)' :
      ' · final step: this draft is the transcript');
  const draft = st.draft_text !== undefined ? st.draft_text : '';
  const title = frame === n - 1 && !s.final_canvas ? 'Transcript' : 'Draft after step ' + (frame + 1);
  root.querySelector('.dv-draft').innerHTML = '<b>' + title + '</b>' + (draft ? esc(draft) : '<i>(empty)</i>');
}
function build() {
  stop();
  data = props.value;
  const segs = segments();
  if (!data || !segs.length) {
    root.dataset.frames = '0';
    const msg = (data && data.no_speech) ? '🔇 No speech detected: there is nothing to denoise.' :
      'Press <b>Denoise &amp; visualise</b>: every step of one model call is recorded, then replayed here.';
    root.innerHTML = '<div class="dv-empty">' + msg + '</div>';
    return;
  }
  seg = Math.min(seg, segs.length - 1); frame = 0;
  const n = frames(); const joint = !!segs[seg].final_canvas;
  root.dataset.frames = String(n);
  const segOptions = segs.map((s, i) => '<option value="' + i + '">segment ' + (i + 1) + ' (' +
    Number(s.start).toFixed(1) + '–' + Number(s.end).toFixed(1) + ' s)</option>').join('');
  const bars = segs[seg].steps.map((st, i) => {
    const a = st.accepted.filter(Boolean).length / Math.max(1, st.accepted.length);
    return '<span data-i="' + i + '" title="step ' + (i + 1) + ': ' + Math.round(100 * a) +
      '% accepted" style="height:' + Math.max(6, Math.round(100 * a)) + '%"></span>';
  }).join('') + (joint ? '<span data-i="' + (n - 1) + '" class="joint" title="the final canvas read jointly with the' +
    ' CTC head" style="height:100%"></span>' : '');
  root.innerHTML =
    '<div class="dv-bar">' +
      '<button class="dv-play" title="play / pause (space)">▶ Play</button>' +
      '<button data-act="first" title="first step">⏮</button>' +
      '<button data-act="prev" title="previous step (←)">◀</button>' +
      '<button data-act="next" title="next step (→)">▶</button><button data-act="last" title="last step">⏭</button>' +
      '<input class="dv-scrub" type="range" min="0" max="' + (n - 1) + '" step="1" value="0" aria-label="step">' +
      '<span class="dv-label"></span>' +
      '<select class="dv-speed" aria-label="speed"><option value="0.5">0.5×</option>' +
      '<option value="1" selected>1×</option>' +
      '<option value="2">2×</option><option value="4">4×</option></select>' +
      (segs.length > 1 ? '<select class="dv-segsel" aria-label="segment">' + segOptions + '</select>' : '') +
      '<label><input type="checkbox" class="dv-showin"' + (showInput ? ' checked' : '') + '> input canvas</label>' +
    '</div>' +
    '<div class="dv-legend"><span>confidence: low<span class="grad"></span>high</span>' +
      '<span><span class="tok acc" style="--h:120"><span class="out">tok</span></span> accepted (kept)</span>' +
      '<span><span class="tok ren" style="--h:30"><span class="out">tok</span></span> re-noised</span>' +
      '<span>small grey line: the canvas the model was given at this step (step 1: uniform random tokens)</span>' +
      (joint ? '<span><span class="tok acc chg" style="--h:120"><span class="out">tok</span></span> changed by the ' +
        'joint reading with the CTC head (last frame)</span>' : '') +
    '</div>' +
    '<div class="dv-stats"></div>' +
    '<div class="dv-chart-label">positions accepted at each step (click a bar to jump there)</div>' +
    '<div class="dv-chart" title="share of positions accepted at each step (click to jump)">' + bars + '</div>' +
    (segs.length > 1 ? '<div class="dv-seg"></div>' : '') +
    '<div class="dv-canvas"></div><div class="dv-draft"></div>';
  root.classList.toggle('noinput', !showInput);
  const sel = root.querySelector('.dv-segsel'); if (sel) { sel.value = String(seg);
    sel.addEventListener('change', () => { seg = Number(sel.value); build(); }); }
  root.querySelector('.dv-play').addEventListener('click', () => (timer ? stop() : play()));
  root.querySelectorAll('.dv-bar button[data-act]').forEach((b) => b.addEventListener('click', () => {
    stop(); const act = b.dataset.act;
    frame = act === 'first' ? 0 : act === 'last' ? frames() - 1 : act === 'prev' ? frame - 1 : frame + 1; draw(); }));
  root.querySelector('.dv-scrub').addEventListener('input', (e) => { stop(); frame = Number(e.target.value); draw(); });
  root.querySelector('.dv-speed').addEventListener('change', (e) => {
    speed = Number(e.target.value); if (timer) play(); });
  root.querySelector('.dv-showin').addEventListener('change', (e) => { showInput = e.target.checked;
    root.classList.toggle('noinput', !showInput); });
  root.querySelectorAll('.dv-chart span').forEach((b) => b.addEventListener('click', () => {
    stop(); frame = Number(b.dataset.i); draw(); }));
  draw();
  play();  // replay once from uniform noise to the transcript; pause, scrub or step at any time
}
root.addEventListener('keydown', (e) => {
  if (!frames() || e.target.tagName === 'SELECT') return;
  if (e.key === ' ') { e.preventDefault(); timer ? stop() : play(); }
  else if (e.key === 'ArrowRight') { stop(); frame += 1; draw(); }
  else if (e.key === 'ArrowLeft') { stop(); frame -= 1; draw(); }
});
watch('value', build);
build();
"""


# --- the page ----------------------------------------------------------------------------------------------------

CSS = """
.asr-header h1 { margin: 0 0 4px; font-size: 1.7em; }
.asr-header p { margin: 0; color: var(--body-text-color-subdued); }
.asr-status { padding: 9px 12px; border-radius: 10px; border: 1px solid; margin-top: 6px; font-size: 14px; }
.asr-status.ok { border-color: #86efac; background: rgba(34,197,94,.08); }
.asr-status.warn { border-color: #fcd34d; background: rgba(245,158,11,.10); }
.asr-status.error { border-color: #fca5a5; background: rgba(239,68,68,.08); }
.asr-timing { font-size: 14px; padding: 6px 2px; font-variant-numeric: tabular-nums; }
.asr-note { font-size: 14px; padding: 7px 10px; border-radius: 8px; margin-top: 6px; }
.asr-note.nospeech { background: rgba(59,130,246,.10); border: 1px solid #93c5fd; }
.asr-note.random { background: rgba(245,158,11,.10); border: 1px solid #fcd34d; }
.cmp-caption { font-size: 13px; color: var(--body-text-color-subdued); margin-bottom: 8px; }
.cmp-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 12px; }
.cmp-card { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px;
  background: var(--background-fill-primary); }
.cmp-card.mine { border: 2px solid var(--color-accent); }
.cmp-head { display: flex; justify-content: space-between; align-items: baseline; }
.cmp-steps { font-size: 1.25em; font-weight: 700; }
.cmp-time { font-variant-numeric: tabular-nums; font-weight: 600; }
.cmp-meta { font-size: 12px; color: var(--body-text-color-subdued); margin: 2px 0 6px; }
.cmp-bar { height: 6px; border-radius: 3px; background: var(--background-fill-secondary); margin-bottom: 8px; }
.cmp-bar span { display: block; height: 100%; border-radius: 3px; background: var(--color-accent); }
.cmp-text { white-space: pre-wrap; word-break: break-word; font-size: 14px; }
.cmp-empty { padding: 24px; text-align: center; color: var(--body-text-color-subdued);
  border: 1px dashed var(--border-color-primary); border-radius: 10px; }
.muted { color: var(--body-text-color-subdued); }
footer { display: none !important; }
"""

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="pink")

HEADER = """<div class="asr-header"><h1>🌫️ Diffusion Gemma ASR</h1>
<p>Speech recognition by <b>denoising</b>: DiffusionGemma starts from a canvas of random tokens and refines the whole
transcript in parallel, step by step, listening to Whisper embeddings of the audio. Fewer steps are faster; more steps
are more careful. Watch it happen in the <b>Denoising visualiser</b>.</p></div>"""

ABOUT = """
### How it works
1. The audio is decoded to 16 kHz mono and cut at pauses into windows of at most 30 s.
2. A Whisper encoder turns each window into embeddings; a projector maps them into DiffusionGemma's input space.
3. The transcript canvas starts as **uniform random tokens**. At every step the model predicts every position at once;
   confident predictions are **accepted**, the others are **re-noised** (replaced by random tokens) and predicted again.
4. Denoising stops after the chosen number of steps, or earlier once the draft is stable and confident.
5. The small model `mini` (what serves without a GPU) reads the final canvas jointly with its CTC head: per position,
   the denoiser's log-probabilities plus twice the head's, its words spelled from a word lexicon (general English word
   and word-pair counts) by a beam search over the positions (the visualiser's last frame shows that reading). The
   real model reads the last draft as it is.

The same seed gives the same transcript. Silence is answered with *no speech detected* rather than invented text.

### Use it as an API
```python
from gradio_client import Client, handle_file

client = Client("owner/space-name")     # or the local URL, e.g. "http://127.0.0.1:7860"
text, result = client.predict(handle_file("speech.wav"), 16, 0, api_name="/transcribe")
print(text)                              # result: segments with start/end times, timings, seed, model
text, record = client.predict(handle_file("speech.wav"), 8, 0, api_name="/transcribe_with_steps")
print(len(record["segments"][0]["steps"]), "steps")   # per step: canvas, argmax, accepted, confidence, ...
runs = client.predict(handle_file("speech.wav"), 16, [4, 8, 32], 0, api_name="/compare_steps")
```
Arguments: audio file, steps (1–48), seed (-1 for a random one). Bad input (empty, too long, not audio) comes
back as an error with the reason.
"""


def _examples() -> tuple[list[list], list[str]]:
    """The clips under examples/ with their reference transcripts (examples/manifest.tsv)."""
    manifest = EXAMPLES_DIR / "manifest.tsv"
    rows, labels = [], []
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 2 and (EXAMPLES_DIR / parts[0]).is_file():
                rows.append([str(EXAMPLES_DIR / parts[0])])
                labels.append(f"🔊 {parts[1]}")
    return rows, labels


def _example_picker(examples: list[list], labels: list[str], audio: gr.Audio, **kw) -> gr.Examples:
    """Example clips that fill ``audio`` when clicked (not cached: the visitor presses the button)."""
    return gr.Examples(
        examples, inputs=[audio], example_labels=labels, cache_examples=False, api_visibility="private", **kw
    )


def _checked_by_validator(component):
    """Leave the range check of ``component`` to the event's validator.

    Gradio's own check runs in ``preprocess`` and, on an event with a validator, reaches gradio_client as a bare
    HTTP 400 without its message; the validator answers API callers with a readable one instead.
    """
    component.preprocess = lambda payload: payload
    return component


def _steps_slider(**kw) -> gr.Slider:
    return _checked_by_validator(
        gr.Slider(
            MIN_STEPS,
            MAX_STEPS,
            value=DEFAULT_STEPS,
            step=1,
            label="Denoising steps",
            info="fewer = faster, more = more careful",
            **kw,
        )
    )


def _seed_box(**kw) -> gr.Number:
    return _checked_by_validator(
        gr.Number(
            value=DEFAULT_SEED,
            precision=0,
            label="Seed",
            info="same seed → same transcript; -1 = random",
            minimum=-1,
            **kw,
        )
    )


def build_demo(state: ModelState, max_audio_seconds: float = MAX_AUDIO_SECONDS) -> gr.Blocks:
    """The Gradio app for ``state``'s model. Launch it with :func:`launch` (theme and CSS go to ``launch()``)."""
    pipe_name = state.requested

    # ---- handlers (closures over the immutable state; nothing shared between requests) ----

    def validate_transcribe(audio, steps, seed):
        return _validation(check_audio(audio, max_audio_seconds), check_steps(steps), check_seed(seed))

    def transcribe(audio: str, steps: int = DEFAULT_STEPS, seed: int = DEFAULT_SEED, progress=gr.Progress()):
        """Transcribe an audio file.

        Returns the transcript text ("" when no speech is detected) and the result as JSON: text, no_speech, model,
        steps, seed, timings (audio_seconds, wall_seconds, rtfx, stages) and segments (start, end, text, tokens,
        steps_run).
        """
        (transcript,) = _run(state, audio, [steps], seed, True, progress, max_audio_seconds)
        return transcript.text, transcript_dict(transcript, steps=False)

    def transcribe_with_steps(audio: str, steps: int = DEFAULT_STEPS, seed: int = DEFAULT_SEED, progress=gr.Progress()):
        """Transcribe an audio file and return every denoising step of the one model call.

        Returns the transcript text and JSON like /transcribe's, where each segment also has "steps": one record per
        step with index, temperature, canvas (the tokens the model was given), sampled, argmax (the draft),
        accepted (kept vs re-noised), confidence, entropy and draft_text; "token_pieces" maps token ids to text.
        Where "ctc_weight" > 0 (mini) the text was read jointly with the CTC head from each segment's "final_canvas"
        ("lexicon": true: its words spelled from the model's word lexicon).
        """
        (transcript,) = _run(state, audio, [steps], seed, True, progress, max_audio_seconds)
        return transcript.text, transcript_dict(transcript, steps=True, pipe=state.pipe)

    def validate_compare(audio, steps, compare, seed):
        counts = _compare_counts(steps, compare)
        problem = check_steps(steps)
        if problem is None and not counts:
            problem = "Choose at least one step count."
        compare_problem = None
        if any(check_steps(c) for c in (compare or [])):
            compare_problem = f"Step counts must be whole numbers from {MIN_STEPS} to {MAX_STEPS}."
        elif len(counts) > MAX_COMPARE_RUNS:
            compare_problem = f"Compare at most {MAX_COMPARE_RUNS} step counts at once."
        return _validation(check_audio(audio, max_audio_seconds), problem, compare_problem, check_seed(seed))

    def compare_steps(
        audio: str,
        steps: int = DEFAULT_STEPS,
        compare: list[int] | None = None,
        seed: int = DEFAULT_SEED,
        progress=gr.Progress(),
    ):
        """Transcribe the same audio at several step counts (``steps`` plus the ``compare`` list), same seed.

        All runs share one GPU claim. Returns {"seed", "runs": [{"steps", "steps_run", "text", "no_speech",
        "timings"}]}, sorted by step count.
        """
        counts = _compare_counts(steps, DEFAULT_COMPARE if compare is None else compare)
        transcripts = _run(state, audio, counts, seed, True, progress, max_audio_seconds)
        runs = []
        for count, t in zip(counts, transcripts, strict=True):
            ran = [len(s.steps) for s in t.segments if s.steps is not None]
            runs.append(
                {
                    "steps": count,
                    "steps_run": max(ran) if ran else None,
                    "text": t.text,
                    "no_speech": t.no_speech,
                    "timings": t.timings.to_dict(),
                }
            )
        return {"model": transcripts[0].model, "seed": transcripts[0].seed, "runs": runs}

    # ---- layout ----

    with gr.Blocks(title="Diffusion Gemma ASR", delete_cache=(1800, 3600)) as demo:
        gr.HTML(HEADER, padding=False)
        gr.HTML(model_status(state), elem_id="model-status", padding=False)
        examples, labels = _examples()

        def transcription_tab(source: str):
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    audio = gr.Audio(
                        sources=[source],
                        type="filepath",
                        label="Audio file" if source == "upload" else "Record",
                        elem_id=f"{source}-audio",
                    )
                    with gr.Row():
                        steps = _steps_slider(scale=3, elem_id=f"{source}-steps")
                        seed = _seed_box(elem_id=f"{source}-seed")
                    button = gr.Button("Transcribe", variant="primary", elem_id=f"{source}-button")
                    if examples and source == "upload":
                        _example_picker(examples, labels, audio, label="Examples (generated with espeak-ng; CC0)")
                with gr.Column(scale=6):
                    text = gr.Textbox(
                        label="Transcript",
                        lines=4,
                        max_lines=14,
                        buttons=["copy"],
                        placeholder="The transcript appears here.",
                        elem_id=f"{source}-text",
                        interactive=False,
                    )
                    info = gr.HTML("", elem_id=f"{source}-info", padding=False)
                    table = gr.Dataframe(
                        headers=["start", "end", "steps", "text"],
                        datatype=["str", "str", "number", "str"],
                        label="Segments",
                        interactive=False,
                        wrap=True,
                        column_widths=["15%", "15%", "10%", "60%"],
                        elem_id=f"{source}-segments",
                    )
                    files = gr.File(
                        label="Download (.txt, .srt, .vtt)",
                        file_count="multiple",
                        interactive=False,
                        visible=False,
                        elem_id=f"{source}-files",
                    )
                    with gr.Accordion("Result as JSON (what the API returns)", open=False):
                        result = gr.JSON(label="result", elem_id=f"{source}-json")
            api = {"upload": ("transcribe", "public"), "microphone": ("transcribe_microphone", "undocumented")}
            name, visibility = api[source]
            event = button.click(
                transcribe,
                inputs=[audio, steps, seed],
                outputs=[text, result],
                api_name=name,
                api_visibility=visibility,
                validator=validate_transcribe,
                concurrency_limit=CONCURRENCY,
                concurrency_id="model",
            )

            def show_result(result, audio):
                paths = write_downloads(result, audio, files)
                return segment_rows(result), gr.update(value=paths, visible=bool(paths)), result_info(result)

            event.success(
                show_result,
                inputs=[result, audio],
                outputs=[table, files, info],
                api_name=f"show_{source}_result",
                api_visibility="private",
                concurrency_limit=None,
            )

        with gr.Tabs():
            with gr.Tab("📁 Upload", id="upload"):
                transcription_tab("upload")
            with gr.Tab("🎙️ Microphone", id="microphone"):
                gr.Markdown(
                    "Record with your browser's microphone (allow access when asked), stop, then press "
                    "**Transcribe**. Recordings usually arrive at 48 kHz; they are resampled to 16 kHz."
                )
                transcription_tab("microphone")
            with gr.Tab("🔢 Steps", id="steps"):
                gr.Markdown(
                    "The same audio, the same seed, several step counts side by side: how much does each extra "
                    "denoising step buy? All runs share one GPU call."
                )
                with gr.Row(equal_height=False):
                    c_audio = gr.Audio(
                        sources=["upload", "microphone"],
                        type="filepath",
                        label="Audio",
                        elem_id="steps-audio",
                        scale=5,
                    )
                    with gr.Column(scale=4):
                        c_steps = _steps_slider(elem_id="steps-steps")
                        c_compare = gr.Dropdown(
                            COMPARE_CHOICES,
                            value=DEFAULT_COMPARE,
                            multiselect=True,
                            allow_custom_value=True,
                            label="Compare with",
                            info=f"also run at these step counts (type any count from {MIN_STEPS} to {MAX_STEPS})",
                            elem_id="steps-compare",
                        )
                        c_seed = _seed_box(elem_id="steps-seed")
                        c_button = gr.Button("Compare step counts", variant="primary", elem_id="steps-button")
                if examples:
                    _example_picker(examples, labels, c_audio)
                c_cards = gr.HTML(compare_cards(None), elem_id="steps-cards", padding=False)
                c_result = gr.JSON(visible=False, label="comparison")
                c_event = c_button.click(
                    compare_steps,
                    inputs=[c_audio, c_steps, c_compare, c_seed],
                    outputs=[c_result],
                    api_name="compare_steps",
                    validator=validate_compare,
                    concurrency_limit=CONCURRENCY,
                    concurrency_id="model",
                )
                c_event.success(
                    compare_cards,
                    inputs=[c_result, c_steps],
                    outputs=[c_cards],
                    api_name="show_comparison",
                    api_visibility="private",
                    concurrency_limit=None,
                )
            with gr.Tab("🌫️ Denoising visualiser", id="visualiser"):
                gr.Markdown(
                    "Every step of **one** model call is recorded, then replayed here in your browser: play, pause, "
                    "step or scrub from uniform random tokens to the transcript. Each token is coloured by the "
                    "model's confidence; dashed tokens were re-noised for the next step. Noise tokens are shown as "
                    "the real tokens they are (hover a token for details)."
                )
                with gr.Row(equal_height=False):
                    v_audio = gr.Audio(
                        sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="vis-audio", scale=5
                    )
                    with gr.Column(scale=4):
                        v_steps = _steps_slider(elem_id="vis-steps")
                        v_seed = _seed_box(elem_id="vis-seed")
                        v_button = gr.Button("Denoise & visualise", variant="primary", elem_id="vis-button")
                if examples:
                    _example_picker(examples, labels, v_audio)
                v_text = gr.Textbox(
                    label="Transcript", lines=2, interactive=False, elem_id="vis-text", buttons=["copy"]
                )
                v_player = gr.HTML(
                    None,
                    html_template=PLAYER_TEMPLATE,
                    css_template=PLAYER_CSS,
                    js_on_load=PLAYER_JS,
                    elem_id="vis-player",
                    apply_default_css=False,
                    padding=False,
                )
                v_result = gr.JSON(visible=False, label="record")
                v_event = v_button.click(
                    transcribe_with_steps,
                    inputs=[v_audio, v_steps, v_seed],
                    outputs=[v_text, v_result],
                    api_name="transcribe_with_steps",
                    validator=validate_transcribe,
                    concurrency_limit=CONCURRENCY,
                    concurrency_id="model",
                )
                # hand the recorded steps to the player in the browser (no second trip to the server)
                v_event.success(
                    None,
                    inputs=[v_result],
                    outputs=[v_player],
                    js="(record) => record",
                    api_name="show_denoising",
                    api_visibility="private",
                )
            with gr.Tab("ℹ️ About & API", id="about"):
                gr.Markdown(ABOUT)
                gr.Markdown(
                    f"Limits of this app: audio up to **{_duration(max_audio_seconds)}** per request, "
                    f"{MIN_STEPS}–{MAX_STEPS} steps. Model: `{pipe_name}`."
                )
    demo.queue(max_size=64)
    return demo


def _compare_counts(steps, compare) -> list[int]:
    counts = set()
    for value in [steps, *(compare or [])]:
        try:
            counts.add(int(float(value)))
        except (TypeError, ValueError):
            continue
    return sorted(c for c in counts if MIN_STEPS <= c <= MAX_STEPS)


def launch(demo: gr.Blocks, **kwargs):
    """``demo.launch`` with the app's theme, CSS and upload limit (Gradio 6 takes those in ``launch()``)."""
    kwargs.setdefault("max_file_size", A.MAX_FILE_BYTES)
    return demo.launch(theme=THEME, css=CSS, **kwargs)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Diffusion Gemma ASR: the Gradio app.")
    p.add_argument(
        "--model",
        default=os.environ.get("ASR_MODEL") or asr.DEFAULT_MODEL,
        help=f"hub id, adapter folder/.pt, mini, a small-model folder, or tiny-random (default: $ASR_MODEL or "
        f"{asr.DEFAULT_MODEL}; where it cannot load: $ASR_FALLBACK_MODEL, default {FALLBACK_MODEL})",
    )
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for a network)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860 or $GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return p.parse_known_args(argv)[0]


ARGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
MODEL = load_model(ARGS.model)
demo = build_demo(MODEL)

if __name__ == "__main__":
    launch(demo, server_name=ARGS.host, server_port=ARGS.port, share=ARGS.share or None)
