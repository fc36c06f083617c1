"""Training recipe: projector + LoRA on a frozen backbone, or a whole small backbone; the whisper encoder is frozen.

    python -m asr.train --manifest data/train.tsv --out runs/x [--model tiny-random|small|new-adapter|ADAPTER]
                        [--train projector+lora|all] [--steps N] [--resume]

The three losses of the published recipe, on one batch of clips (B clips, canvas length C, vocabulary V):

- **diffusion** (uniform-noise denoising): the clean canvas is the transcript's token ids, then EOS, padded with
  the pad id to C (exactly what inference turns back into text). A fraction gamma ~ U(0, 1] of its positions (per
  clip; ``--gamma-power`` > 1 draws it closer to 1) is replaced by uniform-random vocabulary ids, as at inference
  where the canvas starts as uniform noise. The decoder denoises it over the prompt KV cache (built with
  ``SpeechModel.prompt_embeddings``/``prefill``, with gradients) and is trained with cross-entropy against the clean
  canvas at every position (pad positions weighted by ``--pad-weight``). Self-conditioning: for each clip with
  probability 0.5 a first, no-gradient pass's logits, divided by a temperature drawn from the sampler's range
  (0.4-0.8, as inference feeds them), are passed as ``self_conditioning_logits``. With ``--canvas aligned`` the
  clean canvas has one position per audio slot instead: each id at the slot where the CTC head's best path
  (Viterbi, recomputed every batch from the current head) emits it, pad elsewhere (``asr.model.CANVASES``), and it
  ends, as at inference, after the slots that cover the batch's longest clip (not at the 30 s window's end).
- **ar** (autoregressive auxiliary): the causal encoder continues the prompt's cache with the transcript tokens
  (teacher forcing) and predicts each next token and finally EOS through the tied lm_head (with the model's logit
  soft-capping): the last prompt position predicts the first token.
- **ctc**: the projector output (one row per audio slot: 8 whisper frames, or ``--subsampling``) goes through the
  lm_head weight (detached: frozen for this loss even when the backbone trains), log-softmax over the vocabulary, CTC
  against the transcript ids. Blank = the pad id (pad never occurs inside a transcript). Input length = the slots
  that cover the clip's audio (6.25 per second at x8), or all slots of the 30 s window when no CTC path of the
  transcript fits in those (its ids, with a blank between repeated ones; e.g. byte-level tokenizers).

``--frame-mask``/``--channel-dropout`` apply SpecAugment to the whisper outputs (:func:`augment_frames`) before the
projector. The total is ``w_diffusion * diffusion + w_ar * ar + w_ctc * ctc``. With ``--w-diffusion 0 --w-ar 0`` the
backbone does not run at all: a CTC-only phase that trains the projector alone, many times faster per clip.

Whisper encoder outputs are computed once per clip and cached on disk (float16 ``.npy`` per clip, keyed by the
file and the encoder's weights) since the encoder is frozen. Checkpoints (``OUT/checkpoint.pt``: trainable weights,
optimizer, RNG, step, settings) are written every ``--save-every`` steps and at the end; ``--resume`` continues
from one bit for bit. Per-step losses go to ``OUT/log.jsonl``. At the end (and with every checkpoint) the model is
exported: ``OUT/diffusion_asr_small.pt`` (projector + LoRA, the released adapter's format) for
``projector+lora``, or ``OUT/model/`` (see :func:`export_model`) for ``all``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import model as M
from .decoding import ctc_alignment, decoder_inputs
from .evaluate import Utterance, parse_manifest, read_manifest
from .loading import SMALL_MODEL_INFO, load_whisper, small_model_folder
from .model import Projector, SpeechModel

MODES = ("projector+lora", "all")
CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
DEFAULT_WHISPER_DIR = Path(__file__).parent / "mini" / "whisper-tiny-en"
FEATURE_GROUP = 16  # clips per log-mel call when the frame cache computes features in threads


# --- settings -----------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every setting of a run (saved in the checkpoint; ``--resume`` rebuilds the model from it)."""

    manifest: str = ""
    out: str = "runs/train"
    model: str = "tiny-random"  # tiny-random | small | new-adapter | an adapter path/hub id | a small-model folder
    train: str = "projector+lora"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    schedule_from: int = 0  # > 0: the new cosine (no warm-up) of a finished run resumed from this step
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    w_diffusion: float = 1.0
    w_ar: float = 0.5
    w_ctc: float = 0.5
    ctc_steps: int = 0  # the first steps train CTC only (no backbone): a head to align to, for --canvas aligned
    pad_weight: float = 1.0
    # SpecAugment on the cached whisper outputs (augment_frames): the fraction of frames zeroed in time masks, and
    # the probability of zeroing a feature channel of a clip across all its frames
    frame_mask: float = 0.0
    channel_dropout: float = 0.0
    # the CTC loss also trains the lm_head weight (the small model's tied embeddings; --train all only), instead of
    # reading it frozen as the published recipe does
    ctc_train_head: bool = False
    gamma_power: float = 1.0  # noise levels: 1 uniform, > 1 denser near the all-noise canvas (see noise_levels)
    self_conditioning: float = 0.5
    sc_t_min: float = 0.4
    sc_t_max: float = 0.8
    lora_rank: int = 16
    lora_alpha: float = 32.0
    canvas_length: int | None = None
    canvas: str | None = None  # asr.model.CANVASES; None: as the model given was trained, else packed
    seed: int = 0
    save_every: int = 200
    log_every: int = 1
    cache_dir: str | None = None  # default OUT/frames; "memory": on the training device, no files
    time_budget: float | None = None  # seconds for the whole run: --steps is then set from the measured step time
    profile_steps: int = 0  # > 0: profile this many steps with every loss (after 2 warm-up steps) into OUT/profile.txt
    compile: str | None = None  # torch.compile backend for the loss computation (inductor), or None: eager
    # bfloat16: the loss computation under torch.autocast (weights and optimizer stay in --dtype); on a CPU with
    # native bfloat16 (AVX512-BF16) ~1.25x faster small-model steps (train/results/cpu-x4 section 16)
    autocast: str | None = None
    prefetch: str | None = None  # a manifest still being written: its frames are computed while it grows...
    wait_for: str | None = None  # ...until this file exists; then --manifest is read
    cache_dtype: str = "float16"
    # whisper encodes only each batch's audio (+1 s) and a silent window's frames fill the rest, as asr.load runs
    # small models (SpeechModel.whisper_frames); None: so for --train all, the whole window otherwise
    trim_encoder: bool | None = None
    device: str = "cpu"
    threads: int | None = None
    max_seconds: float = 30.0
    # small model (``--model small``)
    whisper: str = str(DEFAULT_WHISPER_DIR)  # exported whisper encoder folder, or tiny-random
    # byte, or a tokenizer folder (must know the turn and audio marker tokens); None: byte for a new small model, the
    # model's own for --model FOLDER (another one there: the model moves to its vocabulary, revocab_backbone)
    tokenizer: str | None = None
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    experts: int = 4
    projector_hidden: int = 512
    # attention blocks at the projector's end (backbone width, M.attention_spec): a new small model's, or how many a
    # continued model's projector should end in (missing ones are added as the identity, trained weights kept)
    projector_attention: int = 0
    # whisper frames per audio slot: a new model's (None: 8, 6.25 slots per second, as the released projector), or a
    # new rate for a continued model's projector (its convolutions re-strided, weights kept)
    subsampling: int | None = None
    # real backbone (``--model new-adapter`` or an adapter)
    backbone: str = "google/diffusiongemma-26B-A4B-it"
    whisper_id: str = "openai/whisper-small"
    dtype: str = "float32"
    # evaluation during training
    eval_manifest: str | None = None
    eval_every: int = 0
    eval_count: int = 20
    eval_steps: int = 8
    extra: dict = field(default_factory=dict)


# --- building the model ----------------------------------------------------------------------------------------------


def small_backbone_config(
    vocab_size: int,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    experts: int = 4,
    canvas_length: int = 128,
    sliding_window: int = 512,
    pad_id: int = 0,
    eos_id: int = 1,
    bos_id: int = 2,
):
    """A small DiffusionGemma (real classes: MoE blocks, sliding + full attention, the last layer full)."""
    head_dim = hidden // heads
    layer_types = [
        "full_attention" if (i + 1) % 3 == 0 or i == layers - 1 else "sliding_attention" for i in range(layers)
    ]
    text = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        layer_types=layer_types, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        head_dim=head_dim, global_head_dim=2 * head_dim, num_global_key_value_heads=1, num_experts=experts,
        top_k_experts=min(2, experts), moe_intermediate_size=hidden, sliding_window=sliding_window,
        pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=bos_id, vocab_size_per_layer_input=vocab_size,
    )  # fmt: skip
    return M.small_config(text, canvas_length)


def load_tokenizer(spec: str, vocab_size: int = 512):
    """The byte tokenizer (``byte``) or a saved tokenizer folder."""
    from .loading import byte_tokenizer

    if spec == "byte":
        return byte_tokenizer(vocab_size)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec)


def build_small(cfg: TrainConfig) -> tuple[SpeechModel, object, object]:
    """Pretrained (frozen) whisper encoder + new projector + new small DiffusionGemma + tokenizer."""
    from transformers import DiffusionGemmaForBlockDiffusion

    whisper, features = load_whisper(cfg.whisper, seed=cfg.seed)
    spec = cfg.tokenizer or "byte"
    tokenizer = load_tokenizer(spec)
    vocab = 512 if spec == "byte" else backbone_vocab(tokenizer)
    eos = tokenizer.eos_token_id
    subsampling = cfg.subsampling or M.SUBSAMPLING
    layout = M.default_projector_layout(whisper.config.d_model, cfg.projector_hidden, cfg.hidden, subsampling)
    layout += [M.attention_spec(cfg.hidden)] * cfg.projector_attention
    slots = M.layout_slots(layout, whisper.config.max_source_positions)
    canvas = slots if cfg.canvas == "aligned" else cfg.canvas_length or 128
    config = small_backbone_config(
        vocab, cfg.hidden, cfg.layers, cfg.heads, cfg.experts, canvas, sliding_window=sliding_window(slots, canvas),
        pad_id=tokenizer.pad_token_id or 0, eos_id=eos, bos_id=tokenizer.bos_token_id or 2,
    )  # fmt: skip
    state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    try:
        backbone = DiffusionGemmaForBlockDiffusion(config)
        projector = Projector(layout)
    finally:
        torch.random.set_rng_state(state)
    backbone.generation_config.eos_token_id = [eos]
    prompt = M.prompt_format_from_tokenizer(tokenizer, eos_ids=[eos])
    return SpeechModel(whisper, projector, backbone, prompt), tokenizer, features


def backbone_vocab(tokenizer) -> int:
    """The small backbone's vocabulary for ``tokenizer``: its size rounded up to a multiple of 64 (room for the unused
    image marker ids, and a friendlier matrix size)."""
    vocab = len(tokenizer)
    return vocab + (-vocab) % 64


def revocab_backbone(speech: SpeechModel, old_tokenizer, tokenizer) -> None:
    """Move a trained small model to another tokenizer's vocabulary (``--model FOLDER --tokenizer NEW``): every
    backbone weight is kept except the (tied) embedding matrix, which is rebuilt with a row per new id: the mean of
    the old rows of the ids the old tokenizer gives the new token's text (special and marker tokens take the row of
    the same token). So the CTC head and the denoiser start near where they were instead of from scratch; the
    prompt is encoded again with the new tokenizer."""
    from transformers import DiffusionGemmaForBlockDiffusion

    old = speech.backbone
    vocab = backbone_vocab(tokenizer)
    text = old.config.text_config
    settings = {k: v for k, v in text.to_dict().items() if k not in ("model_type", "transformers_version")}
    settings.update(
        vocab_size=vocab, vocab_size_per_layer_input=vocab, pad_token_id=tokenizer.pad_token_id or 0,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    backbone = DiffusionGemmaForBlockDiffusion(M.small_config(settings, old.config.canvas_length))
    backbone.to(old.dtype)
    embed = old.get_input_embeddings().weight.detach()
    weights = {k: v for k, v in old.state_dict().items() if v.data_ptr() != embed.data_ptr()}  # all but the tied ones
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    rows = backbone.get_input_embeddings().weight
    if unexpected or any(backbone.get_parameter(k) is not rows for k in missing):
        raise ValueError(f"the backbone's weights do not fit the new vocabulary: {unexpected or missing}")
    old_added = {t.content: i for i, t in old_tokenizer.added_tokens_decoder.items()}
    with torch.no_grad():
        for i in range(len(tokenizer)):
            added = tokenizer.added_tokens_decoder.get(i)
            if added is not None and added.content in old_added:  # <pad>, <eos>, the turn and audio markers...
                rows[i] = embed[old_added[added.content]]
                continue
            ids = old_tokenizer.encode(tokenizer.decode([i]), add_special_tokens=False)
            if ids:
                rows[i] = embed[ids].mean(0)
    backbone.tie_weights()
    backbone.generation_config.eos_token_id = [tokenizer.eos_token_id]
    speech.backbone = backbone
    speech.prompt = M.prompt_format_from_tokenizer(tokenizer, eos_ids=[tokenizer.eos_token_id])


def sliding_window(slots: int, canvas: int) -> int:
    """The small backbone's sliding window for ``slots`` audio slots and a ``canvas``-long canvas: the sliding layers
    see the whole prompt from every canvas position (512 is enough at x8: 188 slots + 160)."""
    return max(512, 128 * math.ceil((slots + 64 + canvas) / 128))


def relayout_projector(speech: SpeechModel, layout: list[M.LayerSpec]) -> None:
    """Give ``speech``'s projector ``layout``: its layers keep their weights, layers appended after them start as
    built. Raises :class:`asr.model.ProjectorLayoutError` when the old weights do not fit the new layers."""
    old = speech.projector
    speech.projector = Projector(layout).to(next(old.parameters()).dtype)
    missing, unexpected = speech.projector.load_state_dict(old.state_dict(), strict=False)
    unfilled = [k for k in missing if int(k.split(".")[1]) < len(old.layout)]
    if unexpected or unfilled:
        raise M.ProjectorLayoutError(f"the projector's weights do not fit {layout}: {unexpected or unfilled}")


def restride_projector(speech: SpeechModel, subsampling: int) -> None:
    """Give ``speech``'s projector the convolution strides of ``subsampling``, weights kept (``--subsampling`` with
    ``--model FOLDER``): an aligned canvas follows the new slot count, and the backbone's sliding window grows to
    cover the longer prompt if needed."""
    relayout_projector(speech, M.restride_layout(speech.projector.layout, subsampling))
    speech.canvas = speech.canvas  # an aligned canvas takes the new slot count
    text = speech.backbone.config.text_config
    window = max(text.sliding_window, sliding_window(speech.num_slots, speech.canvas_length))
    text.sliding_window = window
    for module in speech.backbone.modules():  # the attention layers copied it when they were built
        if getattr(module, "sliding_window", None) is not None:
            module.sliding_window = window


def add_projector_attention(speech: SpeechModel, count: int) -> None:
    """Make ``speech``'s projector end in ``count`` attention blocks (``--projector-attention`` with ``--model
    FOLDER``): the missing ones are appended as the identity (:class:`asr.model.AttentionBlock`), so the model's
    outputs do not change until they train; the other layers keep their weights."""
    old = speech.projector
    have = M.layout_attention_blocks(old.layout)
    if count < have:
        raise ValueError(f"--projector-attention {count}: the projector already has {have} attention blocks")
    relayout_projector(speech, old.layout + [M.attention_spec(old.out_dim)] * (count - have))


def continue_settings(cfg: TrainConfig) -> TrainConfig:
    """For ``--model`` an exported small-model folder (or ``mini``): take the encoder, tokenizer, canvas and projector
    subsampling it was trained with (so that the next export names them again). :func:`main` also makes ``--train``
    default to ``all`` for it."""
    folder = small_model_folder(cfg.model)
    if folder is None or not (folder / SMALL_MODEL_INFO).is_file():  # absent "mini": build_model says so
        return cfg
    info = json.loads((folder / SMALL_MODEL_INFO).read_text(encoding="utf-8"))
    whisper = info["whisper"]
    if whisper != "tiny-random" and (folder / whisper).exists():
        whisper = str((folder / whisper).resolve())
    layout = [M.LayerSpec(**s) for s in info.get("projector_layout", [])]  # older exports: none (x8)
    return dataclasses.replace(
        cfg,
        whisper=whisper,
        tokenizer=cfg.tokenizer or str((folder / "tokenizer").resolve()),
        canvas_length=cfg.canvas_length or int(info["canvas_length"]),
        canvas=cfg.canvas or info.get("canvas", "packed"),
        subsampling=cfg.subsampling or (M.layout_subsampling(layout) if layout else None),
        projector_attention=cfg.projector_attention or M.layout_attention_blocks(layout),
    )


def build_model(cfg: TrainConfig) -> tuple[SpeechModel, object, object]:
    """``(SpeechModel, tokenizer, feature extractor)`` for ``cfg.model``; LoRA is injected for ``projector+lora``."""
    from . import loading

    dtype = getattr(torch, cfg.dtype)
    if cfg.canvas not in (None, *M.CANVASES):
        raise ValueError(f"--canvas must be one of {M.CANVASES}, got {cfg.canvas!r}")
    if cfg.canvas == "aligned" and cfg.train != "all":
        raise ValueError("--canvas aligned needs --train all (a small model): the adapter file does not record it")
    if cfg.ctc_train_head and cfg.train != "all":
        raise ValueError("--ctc-train-head needs --train all: the real backbone's lm_head stays frozen")
    if cfg.model == "tiny-random":
        speech, tokenizer, features = loading.build_tiny(seed=cfg.seed, canvas_length=cfg.canvas_length or 16)
    elif cfg.model == "small":
        speech, tokenizer, features = build_small(cfg)
    elif cfg.model == "new-adapter":
        whisper, backbone, tokenizer, features = loading.real_parts(cfg.backbone, cfg.whisper_id, cfg.device, dtype)
        backbone.config.canvas_length = cfg.canvas_length or loading.DEFAULT_CANVAS
        eos = backbone.generation_config.eos_token_id or backbone.config.text_config.eos_token_id
        prompt = M.prompt_format_from_tokenizer(tokenizer, eos_ids=eos if isinstance(eos, list) else [eos])
        hidden = backbone.config.text_config.hidden_size
        projector = Projector(M.default_projector_layout(whisper.config.d_model, 1280, hidden))
        speech = SpeechModel(whisper, projector, backbone, prompt)
    elif (folder := small_model_folder(cfg.model)) is not None:  # trained further (fresh optimizer)
        speech, tokenizer, features = loading.load_small_model(folder, canvas_length=cfg.canvas_length)
        own = (folder / "tokenizer").resolve()
        if cfg.tokenizer and Path(cfg.tokenizer).resolve() != own:  # another vocabulary
            old_tokenizer, tokenizer = tokenizer, load_tokenizer(cfg.tokenizer)
            revocab_backbone(speech, old_tokenizer, tokenizer)
    else:  # an existing adapter, trained further
        speech, tokenizer, features = loading.build(
            cfg.model, cfg.device, dtype, backbone=cfg.backbone, whisper=cfg.whisper_id, canvas_length=cfg.canvas_length
        )
    if cfg.train == "projector+lora" and not any(".lora_" in n for n, _ in speech.backbone.named_parameters()):
        targets = M.attention_lora_targets(speech.backbone)
        state = torch.random.get_rng_state()
        torch.manual_seed(cfg.seed + 2)
        try:
            M.inject_lora(speech.backbone, {t: cfg.lora_rank for t in targets}, cfg.lora_alpha)
        finally:
            torch.random.set_rng_state(state)
    if cfg.canvas is not None:
        speech.canvas = cfg.canvas  # aligned: one canvas position per audio slot
    if cfg.subsampling and cfg.subsampling != speech.projector.subsampling:
        if small_model_folder(cfg.model) is None:
            raise ValueError("--subsampling applies to new small models and to --model FOLDER (re-strided)")
        restride_projector(speech, cfg.subsampling)
    if cfg.projector_attention and cfg.projector_attention != M.layout_attention_blocks(speech.projector.layout):
        if small_model_folder(cfg.model) is None:
            raise ValueError("--projector-attention applies to new small models and to --model FOLDER")
        add_projector_attention(speech, cfg.projector_attention)
    speech.projector.float()
    return speech, tokenizer, features


def trainable_parameters(speech: SpeechModel, mode: str) -> dict[str, nn.Parameter]:
    """Set ``requires_grad`` for ``mode`` and return the trainable parameters by name (tied ones once)."""
    if mode not in MODES:
        raise ValueError(f"--train must be one of {MODES}, got {mode!r}")
    speech.requires_grad_(False)
    out: dict[str, nn.Parameter] = {}
    for name, p in speech.named_parameters():
        if name.startswith("projector."):
            keep = True
        elif mode == "projector+lora":
            keep = ".lora_" in name
        else:
            keep = name.startswith("backbone.") and "vision" not in name
        if keep:
            p.requires_grad_(True)
            out[name] = p
    return out


# --- data -----------------------------------------------------------------------------------------------------------


@dataclass
class Example:
    audio: Path
    text: str
    ids: list[int]
    seconds: float


def prepare_examples(
    utterances: list[Utterance], tokenizer, canvas_length: int, max_seconds: float = 30.0
) -> tuple[list[Example], int]:
    """Tokenise; drop clips over ``max_seconds`` or whose ids + EOS exceed the canvas. Returns (kept, dropped)."""
    import soundfile as sf

    kept: list[Example] = []
    for utt in utterances:
        ids = tokenizer.encode(utt.text, add_special_tokens=False)
        try:
            seconds = sf.info(str(utt.audio)).duration
        except RuntimeError:
            from .audio import load_audio

            seconds = len(load_audio(utt.audio)) / 16000
        if 0 < len(ids) < canvas_length and seconds <= max_seconds:
            kept.append(Example(utt.audio, utt.text, ids, seconds))
    return kept, len(utterances) - len(kept)


def trims_encoder(cfg: TrainConfig) -> bool:
    """Whether the run's whisper frames are trimmed to the audio (``cfg.trim_encoder``; by default for small models,
    ``--train all``, as :func:`asr.load` runs them)."""
    return cfg.train == "all" if cfg.trim_encoder is None else cfg.trim_encoder


def module_fingerprint(module: nn.Module) -> str:
    """A short hash of a module's configuration and weights (not of the folder it was loaded from)."""
    h = hashlib.sha1()
    config = getattr(module, "config", None)
    if config is not None:
        settings = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class FrameCache:
    """Whisper encoder outputs per clip, ``(frames, d_model)`` ``.npy`` files under ``root/<encoder hash>/``
    (``<encoder hash>-trim`` for ``trim``: each group of clips encoded only over its longest clip's audio, as
    :meth:`SpeechModel.whisper_frames` with ``seconds``: 99 instead of 428 ms per 5.8 s clip on a 2-core CPU)."""

    def __init__(
        self, root: str | Path, speech: SpeechModel, feature_extractor, dtype: str = "float16", trim: bool = False
    ):
        self.speech = speech
        self.features = feature_extractor
        self.dtype = np.dtype(dtype)
        self.trim = trim
        self.root = Path(root) / (module_fingerprint(speech.whisper) + ("-trim" if trim else ""))
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, audio: Path) -> Path:
        st = audio.stat()
        key = hashlib.sha1(f"{audio.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npy"

    @torch.inference_mode()
    def encode(self, audios: list[Path]) -> torch.Tensor:
        """Whisper outputs of a few clips, computed now (log-mels on the encoder's device): (B, frames, d_model)
        float32, on the encoder's device."""
        from . import audio as A

        param = next(self.speech.whisper.parameters())

        def log_mel(waves: list[np.ndarray]) -> torch.Tensor:
            out = self.features(waves, sampling_rate=A.SAMPLE_RATE, return_tensors="pt", device=str(param.device))
            return out.input_features

        waves = list(self._pool().map(A.load_audio, audios))
        groups = [waves[i : i + FEATURE_GROUP] for i in range(0, len(waves), FEATURE_GROUP)]
        # per-clip features (padding, STFT, per-clip max): groups in threads give the same rows as one call
        feats = torch.cat(list(self._pool().map(log_mel, groups)))
        seconds = max(len(w) for w in waves) / A.SAMPLE_RATE if self.trim else None
        return self.speech.whisper_frames(feats.to(param.device), seconds).float()

    def _pool(self):
        if getattr(self, "_threads", None) is None:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))  # decoding frees the GIL
        return self._threads

    def ensure(self, examples: list[Example], batch_size: int = 8, progress: bool = True) -> int:
        """Compute and store the outputs of every clip not cached yet (once per clip: a manifest may list a clip more
        than once to weight it); returns how many were computed."""
        todo = list({e.audio: e for e in examples if not self.path(e.audio).is_file()}.values())
        todo.sort(key=lambda e: e.seconds)  # groups of similar length: a trimmed encoder then does little padding
        if not todo:
            return 0
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="whisper frames", unit="clip", disable=not progress, file=sys.stderr)
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            frames = self.encode([e.audio for e in chunk]).cpu()
            for e, f in zip(chunk, frames, strict=True):
                path = self.path(e.audio)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, f.numpy().astype(self.dtype))
                os.replace(tmp, path)
            bar.update(len(chunk))
        bar.close()
        return len(todo)

    def load(self, examples: list[Example]) -> torch.Tensor:
        """Cached outputs of ``examples``: (B, frames, d_model) float32 (computed on the spot if missing)."""
        missing = [e for e in examples if not self.path(e.audio).is_file()]
        if missing:
            self.ensure(missing, progress=False)
        return torch.from_numpy(np.stack([np.load(self.path(e.audio)) for e in examples]).astype(np.float32))


class MemoryFrameCache(FrameCache):
    """The same outputs kept in tensors on the encoder's device instead of files (``--cache-dir memory``): for a
    GPU with room for every clip (frames x d_model float16 each: 1.15 MB per clip for whisper tiny.en). Stored in
    blocks of ``block`` clips, so that the store grows (clips arriving a few hundred at a time, ``--prefetch``)
    without ever copying itself."""

    def __init__(
        self,
        speech: SpeechModel,
        feature_extractor,
        dtype: str = "float16",
        batch_size: int = 128,
        block: int = 1024,
        trim: bool = False,
    ):
        self.speech = speech
        self.features = feature_extractor
        self.dtype = getattr(torch, dtype)
        self.trim = trim
        self.batch_size = batch_size
        self.block = block
        self.rows: dict[Path, int] = {}
        self.blocks: list[torch.Tensor] = []

    def ensure(self, examples: list[Example], batch_size: int | None = None, progress: bool = True) -> int:
        seconds = {e.audio: e.seconds for e in examples if e.audio not in self.rows}
        todo = sorted(seconds, key=seconds.get)  # groups of similar length (see FrameCache.ensure)
        if not todo:
            return 0
        from tqdm import tqdm

        size = batch_size or self.batch_size
        bar = tqdm(total=len(todo), desc="whisper frames", unit="clip", disable=not progress, file=sys.stderr)
        for i in range(0, len(todo), size):
            chunk = todo[i : i + size]
            frames = self.encode(chunk).to(self.dtype)
            for audio, row in zip(chunk, frames, strict=True):
                b, j = divmod(len(self.rows), self.block)
                if b == len(self.blocks):
                    shape = (self.block, *frames.shape[1:])
                    self.blocks.append(torch.empty(shape, dtype=self.dtype, device=frames.device))
                self.blocks[b][j] = row
                self.rows[audio] = b * self.block + j
            bar.update(len(chunk))
        bar.close()
        return len(todo)

    def load(self, examples: list[Example]) -> torch.Tensor:
        self.ensure(examples, progress=False)
        device = self.blocks[0].device
        out = torch.empty((len(examples), *self.blocks[0].shape[1:]), dtype=self.dtype, device=device)
        by_block: dict[int, list[tuple[int, int]]] = {}
        for k, e in enumerate(examples):
            b, j = divmod(self.rows[e.audio], self.block)
            by_block.setdefault(b, []).append((k, j))
        for b, pairs in by_block.items():
            where, rows = (torch.tensor(col, device=device) for col in zip(*pairs, strict=True))
            out[where] = self.blocks[b][rows]
        return out.float()


def prefetch_frames(
    cache: FrameCache,
    manifest: Path,
    done: Path,
    tokenizer,
    canvas_length: int,
    max_seconds: float,
    deadline: float | None = None,
    poll: float = 1.0,
    progress: bool = True,
) -> int:
    """Compute the whisper outputs of a manifest that another process is still writing (``train/make_data.py``
    appends a row as each clip is made), until the file ``done`` exists. Returns the clips computed.

    Frames are then ready when the data is, instead of starting after it. Only complete lines are read (a row is
    final once its newline is written); rows whose audio is not there yet wait for the next look. ``deadline``
    (``time.perf_counter()`` value): give up waiting with ``SystemExit`` (the data never finished)."""
    computed, read, seen = 0, 0, 0  # clips computed; characters of the manifest parsed; rows handled
    waiting: list[Utterance] = []  # rows whose audio file is not there yet
    while True:
        finished = done.exists()  # checked before reading, so that a last look sees every row
        text = manifest.read_text(encoding="utf-8") if manifest.is_file() else ""
        end = text.rfind("\n") + 1  # complete lines only
        waiting += parse_manifest(text[read:end].splitlines(), manifest, check_files=False)
        read = max(read, end)
        there = [u.audio.is_file() for u in waiting]
        new = [u for u, ok in zip(waiting, there, strict=True) if ok]
        waiting = [u for u, ok in zip(waiting, there, strict=True) if not ok]
        if new:
            examples, _ = prepare_examples(new, tokenizer, canvas_length, max_seconds)
            computed += cache.ensure(examples, progress=False)
            seen += len(new)
            if progress:
                print(f"prefetch: frames of {seen} clips of {manifest}", file=sys.stderr)
        if finished:
            return computed
        if deadline is not None and time.perf_counter() > deadline:
            raise SystemExit(f"gave up waiting for {done}: the data was not ready within the time budget")
        if not new:
            time.sleep(poll)


@dataclass
class Batch:
    """Targets of one batch, built by :func:`make_batch`."""

    canvas: torch.Tensor  # (B, C) clean canvas: ids, EOS, pad...
    canvas_weight: torch.Tensor  # (B, C) loss weight per position
    canvas_text: torch.Tensor  # (B, C) True at the transcript's ids and its EOS
    ar_input: torch.Tensor  # (B, L) transcript ids, pad-padded
    ar_target: torch.Tensor  # (B, L + 1) ids then EOS, -100 where padded
    ctc_targets: torch.Tensor  # (sum of lengths,) concatenated ids
    target_lengths: torch.Tensor  # (B,)
    audio_slots: torch.Tensor  # (B,) slots covering each clip's audio
    min_slots: torch.Tensor  # (B,) slots a CTC path of each transcript needs: its ids and a blank between repeats


def make_batch(
    examples: list[Example],
    prompt: M.PromptFormat,
    canvas_length: int,
    pad_weight: float = 1.0,
    subsampling: int = M.SUBSAMPLING,
) -> Batch:
    """The clean canvases and the AR/CTC targets of ``examples`` (``subsampling``: whisper frames per audio slot)."""
    eos, pad = prompt.eos_ids[0], prompt.pad_id
    B = len(examples)
    canvas = torch.full((B, canvas_length), pad, dtype=torch.long)
    weight = torch.full((B, canvas_length), float(pad_weight))
    text = torch.zeros((B, canvas_length), dtype=torch.bool)
    longest = max(len(e.ids) for e in examples)
    ar_input = torch.full((B, longest), pad, dtype=torch.long)
    ar_target = torch.full((B, longest + 1), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.ids)
        canvas[i, :n] = torch.tensor(e.ids)
        canvas[i, n] = eos
        weight[i, : n + 1] = 1.0
        text[i, : n + 1] = True
        ar_input[i, :n] = torch.tensor(e.ids)
        ar_target[i, :n] = torch.tensor(e.ids)
        ar_target[i, n] = eos
    return Batch(
        canvas=canvas,
        canvas_weight=weight,
        canvas_text=text,
        ar_input=ar_input,
        ar_target=ar_target,
        ctc_targets=torch.tensor([t for e in examples for t in e.ids], dtype=torch.long),
        target_lengths=torch.tensor([len(e.ids) for e in examples], dtype=torch.long),
        audio_slots=torch.tensor([M.audio_slots(e.seconds, subsampling) for e in examples], dtype=torch.long),
        min_slots=torch.tensor([len(e.ids) + sum(a == b for a, b in itertools.pairwise(e.ids)) for e in examples]),
    )


@torch.no_grad()
def ctc_input_lengths(batch: Batch, slots: int) -> torch.Tensor:
    """The CTC input length of each clip: the slots covering its audio, or all ``slots`` of the window when no CTC path
    of its transcript fits in those (more ids, with a blank between repeated ones, than slots)."""
    lengths = batch.audio_slots.clamp(max=slots)
    return torch.where(batch.min_slots > lengths, torch.full_like(lengths, slots), lengths)


def ctc_log_probs(speech: SpeechModel, audio: torch.Tensor, train_head: bool = False) -> torch.Tensor:
    """The CTC head's log-probabilities of the audio embeddings ``audio`` (B, slots, H): (B, slots, V) float32, through
    the lm_head weight, detached (frozen for the CTC loss even when the backbone trains) unless ``train_head``."""
    return F.log_softmax(speech.ctc_logits(audio, detach_head=not train_head).float(), dim=-1)


@torch.no_grad()
def aligned_batch(batch: Batch, log_probs: torch.Tensor, pad: int, pad_weight: float = 1.0) -> Batch:
    """``batch`` with the aligned canvas (``asr.model.CANVASES``) of the CTC head's ``log_probs`` (B, slots, V, from
    :func:`ctc_log_probs`): each transcript id at the slot where the head's best path emits it, pad elsewhere, weight
    ``pad_weight`` there. The canvas ends after the last slot any clip's path may use (the slots covering the longest
    clip's audio, as inference's canvas ends there: ``SpeechModel.canvas_for``), not at the 30 s window's end."""
    B, slots, _ = log_probs.shape
    targets = [t.tolist() for t in batch.ctc_targets.split(batch.target_lengths.tolist())]
    lengths = ctc_input_lengths(batch, slots)
    where = ctc_alignment(log_probs, targets, lengths, blank=pad)
    canvas = torch.full((B, int(lengths.max())), pad, dtype=torch.long)
    for b, (ids, at) in enumerate(zip(targets, where, strict=True)):
        canvas[b, at] = torch.tensor(ids)
    text = canvas != pad
    weight = torch.where(text, 1.0, float(pad_weight))
    return dataclasses.replace(batch, canvas=canvas, canvas_weight=weight, canvas_text=text)


# --- the losses -----------------------------------------------------------------------------------------------------


def lm_logits(backbone, hidden: torch.Tensor) -> torch.Tensor:
    """The backbone's lm_head and final logit soft-capping, as in its forward."""
    logits = backbone.lm_head(hidden).float()
    cap = backbone.final_logit_softcapping
    return torch.tanh(logits / cap) * cap if cap else logits


class _Capture:
    """Keeps the outputs of the causal encoder (``prefill`` returns only the cache)."""

    def __init__(self, module: nn.Module):
        self.outputs: list[torch.Tensor] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.outputs.append(output.last_hidden_state)

    def close(self) -> None:
        self.handle.remove()


def noise_levels(batch_size: int, generator: torch.Generator, power: float = 1.0) -> torch.Tensor:
    """Per-clip corruption fractions gamma in (0, 1]: ``(1 - u) ** (1 / power)`` for u ~ U[0, 1), i.e. uniform for
    ``power`` 1 and denser near 1 (the all-noise canvas every inference starts from) above it: density
    ``power * g ** (power - 1)``, mean ``power / (power + 1)``. The same random draws for every power."""
    gamma = 1.0 - torch.rand(batch_size, generator=generator)
    return gamma if power == 1.0 else gamma ** (1.0 / power)


FRAME_MASK_SPAN = 10  # whisper frames (0.2 s) per time mask of augment_frames


def augment_frames(
    frames: torch.Tensor, mask: float, channel_dropout: float, generator: torch.Generator
) -> torch.Tensor:
    """SpecAugment on whisper's outputs (B, T, d), since the frozen encoder's are cached, not its log-mel inputs: time
    masks zero spans of ``FRAME_MASK_SPAN`` frames starting at random frames (about ``mask`` of all frames), and
    channel masks, as SpecAugment's frequency masks, zero a feature across all of a clip's frames (each with
    probability ``channel_dropout``; the others scaled by ``1 / (1 - channel_dropout)``). Training only."""
    B, T, d = frames.shape
    if mask > 0:
        starts = (torch.rand(B, T, generator=generator) < mask / FRAME_MASK_SPAN).cumsum(1)
        covered = starts - F.pad(starts, (FRAME_MASK_SPAN, 0))[:, :T] > 0  # a span started in the last SPAN frames
        frames = frames.masked_fill(covered[..., None].to(frames.device), 0.0)
    if channel_dropout > 0:
        keep = (torch.rand(B, 1, d, generator=generator) >= channel_dropout).to(frames.device, frames.dtype)
        frames = frames * keep / (1.0 - channel_dropout)
    return frames


def compute_losses(
    speech: SpeechModel,
    frames: torch.Tensor,
    batch: Batch,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The three losses, their weighted ``total``, and ``diffusion_text`` (the denoising loss at the transcript's
    positions only, a detached metric) of one batch of whisper outputs ``frames`` (B, T, d). With ``w_diffusion``
    and ``w_ar`` both 0 the backbone does not run: CTC only (``total`` and ``ctc``), which trains the projector alone
    at a fraction of the cost."""
    backbone = speech.backbone
    device = next(backbone.parameters()).device
    frames = frames.to(device=device, dtype=next(speech.projector.parameters()).dtype)
    if cfg.frame_mask or cfg.channel_dropout:
        frames = augment_frames(frames, cfg.frame_mask, cfg.channel_dropout, generator)
    audio = speech.projector(frames).to(backbone.dtype)  # (B, S, H)
    # (B, S, V): the CTC loss's, and what an aligned canvas follows
    log_probs = ctc_log_probs(speech, audio, train_head=cfg.ctc_train_head)
    out = {}
    if cfg.w_diffusion or cfg.w_ar:
        if cfg.canvas == "aligned":
            batch = aligned_batch(batch, log_probs.detach(), speech.prompt.pad_id, cfg.pad_weight)
        out = _backbone_losses(speech, audio, batch, cfg, generator)

    # (c) CTC on the projector output through the lm_head (frozen unless --ctc-train-head); blank = pad id
    ctc = F.ctc_loss(
        log_probs.transpose(0, 1),  # (S, B, V)
        batch.ctc_targets.to(device),
        ctc_input_lengths(batch, audio.shape[1]).to(device),
        batch.target_lengths.to(device),
        blank=speech.prompt.pad_id,
        reduction="mean",
        zero_infinity=True,
    )
    total = cfg.w_ctc * ctc
    if out:
        total = total + cfg.w_diffusion * out["diffusion"] + cfg.w_ar * out["ar"]
    return {"total": total, **out, "ctc": ctc}


def _backbone_losses(
    speech: SpeechModel, audio: torch.Tensor, batch: Batch, cfg: TrainConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The denoising and autoregressive losses (and the ``diffusion_text`` metric), which run the backbone."""
    backbone = speech.backbone
    device = audio.device
    vocab = backbone.config.text_config.vocab_size
    canvas = batch.canvas.to(device)
    B, C = canvas.shape
    embeds = speech.prompt_embeddings(audio)
    P = embeds.shape[1]
    capture = _Capture(backbone.model.encoder.language_model)
    try:
        cache = speech.prefill(embeds)

        # (a) uniform-diffusion denoising
        gamma = noise_levels(B, generator, cfg.gamma_power)
        corrupt = torch.rand(B, C, generator=generator) < gamma[:, None]
        noise = torch.randint(0, vocab, (B, C), generator=generator)
        noisy = torch.where(corrupt.to(device), noise.to(device), canvas)
        mask_mapping, positions = decoder_inputs(backbone, cache, P, B, C)  # as at inference
        use_sc = torch.rand(B, generator=generator) < cfg.self_conditioning
        temperature = cfg.sc_t_min + (cfg.sc_t_max - cfg.sc_t_min) * torch.rand(B, 1, 1, generator=generator)
        sc_logits = sc_mask = None
        if bool(use_sc.any()):
            with torch.no_grad():
                first = backbone(
                    decoder_input_ids=noisy,
                    past_key_values=cache,
                    decoder_attention_mask=mask_mapping,
                    decoder_position_ids=positions,
                ).logits
            embed_dtype = backbone.model.decoder.embed_tokens.weight.dtype
            sc_logits = (first / temperature.to(device)).to(embed_dtype)
            sc_mask = use_sc.to(device)
        logits = backbone(
            decoder_input_ids=noisy,
            self_conditioning_logits=sc_logits,
            self_conditioning_mask=sc_mask,
            past_key_values=cache,
            decoder_attention_mask=mask_mapping,
            decoder_position_ids=positions,
        ).logits
        per_token = F.cross_entropy(logits.float().reshape(-1, vocab), canvas.reshape(-1), reduction="none")
        weight = batch.canvas_weight.to(device).reshape(-1)
        diffusion = (per_token * weight).sum() / weight.sum()
        diffusion_text = per_token.detach()[batch.canvas_text.to(device).reshape(-1)].mean()  # a metric only

        # (b) autoregressive auxiliary: continue the prompt cache with the transcript (teacher forcing)
        last_prompt = capture.outputs[0][:, -1:]
        text_embeds = backbone.model.encoder.get_input_embeddings()(batch.ar_input.to(device))
        speech.prefill(text_embeds, cache)  # the decoder passes above are done with this cache
        hidden = torch.cat([last_prompt, capture.outputs[1]], dim=1)  # (B, L + 1, H)
        ar_logits = lm_logits(backbone, hidden)
        ar = F.cross_entropy(ar_logits.reshape(-1, vocab), batch.ar_target.to(device).reshape(-1), ignore_index=-100)
    finally:
        capture.close()
    return {"diffusion": diffusion, "ar": ar, "diffusion_text": diffusion_text}


# --- checkpoints and export -------------------------------------------------------------------------------------------


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` at ``cfg.steps``. A finished run resumed to go on
    (``schedule_from`` > 0) starts a new cosine at ``lr`` from that step, with no warm-up (the optimizer is warm)."""
    start = cfg.schedule_from
    if start == 0 and cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    start = start or cfg.warmup
    progress = min(1.0, max(0, step - start) / max(1, cfg.steps - start))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(path: Path, step: int, params: dict[str, nn.Parameter], optimizer, generator, cfg) -> None:
    """Write the resumable state atomically."""
    state = {
        "step": step,
        "trainable": {k: v.detach().cpu() for k, v in params.items()},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "config": dataclasses.asdict(cfg),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def export_model(
    speech: SpeechModel, tokenizer, cfg: TrainConfig, out: Path, dtype: torch.dtype = torch.float16
) -> Path:
    """Write a self-contained small model folder ``out``.

    ``backbone/`` (``DiffusionGemmaForBlockDiffusion.save_pretrained``: config.json + model.safetensors),
    ``projector.safetensors`` (``layers.N.weight``/``bias``; the layout follows from the shapes, as for the released
    adapter), ``tokenizer/``, and ``speech.json`` (prompt ids, canvas length, whisper source, training settings).
    The whisper encoder is not copied: ``speech.json`` names the folder it came from.
    """
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    backbone = copy.deepcopy(speech.backbone).to(dtype)
    backbone.save_pretrained(out / "backbone")
    save_file({k: v.detach().to(dtype).contiguous().cpu() for k, v in speech.projector.state_dict().items()},
              out / "projector.safetensors")  # fmt: skip
    tokenizer.save_pretrained(out / "tokenizer")
    p = speech.prompt
    info = {
        "prompt": {
            "prefix": p.prefix,
            "suffix": p.suffix,
            "audio_start_id": p.audio_start_id,
            "audio_token_id": p.audio_token_id,
            "audio_end_id": p.audio_end_id,
            "eos_ids": p.eos_ids,
            "pad_id": p.pad_id,
        },  # fmt: skip
        "canvas_length": speech.canvas_length,
        "canvas": speech.canvas,
        "whisper": "tiny-random" if cfg.model == "tiny-random" else _relative_to(cfg.whisper, out),
        "projector_layout": [dataclasses.asdict(s) for s in speech.projector.layout],
        "train": dataclasses.asdict(cfg),
    }
    (out / "speech.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return out


def _relative_to(path: str, folder: Path) -> str:
    """``path`` relative to ``folder`` when it is a local folder (so an exported model can move with its encoder)."""
    if path == "tiny-random" or not Path(path).exists():
        return path
    return os.path.relpath(Path(path).resolve(), folder.resolve())


def load_exported(folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """``(SpeechModel, tokenizer, feature extractor)`` from a folder written by :func:`export_model`."""
    from .loading import load_small_model

    speech, tokenizer, features = load_small_model(Path(folder))
    return speech.to(device=device, dtype=dtype).eval(), tokenizer, features


def export(speech: SpeechModel, tokenizer, cfg: TrainConfig, out: Path) -> Path:
    """The adapter file (``projector+lora``) or the model folder (``all``)."""
    from .loading import ADAPTER_FILE, save_adapter

    if cfg.train == "projector+lora":
        path = out / ADAPTER_FILE
        tmp = out / (ADAPTER_FILE + ".tmp")
        save_adapter(speech, tmp, canvas_length=speech.canvas_length, lora_alpha=cfg.lora_alpha)
        os.replace(tmp, path)
        return path
    return export_model(speech, tokenizer, cfg, out / "model")


# --- the loop -------------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    step: int
    history: list[dict]  # the log rows of this call
    out: Path


def _append_log(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (written after the last checkpoint of an interrupted run)."""
    if path.is_file():
        rows = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        path.write_text("".join(ln + "\n" for ln in rows if json.loads(ln).get("step", 0) <= step), encoding="utf-8")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> RunResult:
    """Run (or, with ``resume``, continue) training as ``cfg`` says; returns the last step and the losses logged."""
    run_started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    state = None
    if resume and ckpt_path.is_file():
        state = read_checkpoint(ckpt_path)
        saved = TrainConfig(**state["config"])
        # these may change on resume; the rest comes from the checkpoint (so do these, unless given a new value)
        keep = {
            "save_every",
            "log_every",
            "threads",
            "eval_every",
            "eval_count",
            "eval_manifest",
            "eval_steps",
            "device",
            "time_budget",
            "profile_steps",
            "compile",
            "autocast",
        }
        default = TrainConfig()
        changed = {k: getattr(cfg, k) for k in keep if getattr(cfg, k) != getattr(default, k)}
        # A run that had ended (its learning rate decayed) and goes on starts a new cosine from here; an interrupted
        # one continues its schedule.
        ended = int(state["step"]) >= saved.steps
        schedule_from = int(state["step"]) if ended else saved.schedule_from
        # the data of this call, not of the saved one
        cfg = dataclasses.replace(saved, steps=cfg.steps, prefetch=cfg.prefetch, wait_for=cfg.wait_for,
                                  schedule_from=schedule_from, **changed)  # fmt: skip
    cfg = continue_settings(cfg)
    cfg = dataclasses.replace(cfg, canvas=cfg.canvas or "packed")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if str(cfg.device).startswith("cuda"):  # float32 training: TF32 tensor cores for matmuls and convolutions
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    speech, tokenizer, features = build_model(cfg)
    speech.to(cfg.device)
    params = trainable_parameters(speech, cfg.train)
    if cfg.cache_dir == "memory":
        cache = MemoryFrameCache(speech, features, cfg.cache_dtype, trim=trims_encoder(cfg))
    else:
        cache = FrameCache(cfg.cache_dir or out / "frames", speech, features, cfg.cache_dtype, trims_encoder(cfg))
    if cfg.prefetch:  # the data is still being made: frames of its clips as they come, until cfg.wait_for exists
        deadline = run_started + cfg.time_budget if cfg.time_budget else None
        t = time.perf_counter()
        early = prefetch_frames(cache, Path(cfg.prefetch), Path(cfg.wait_for), tokenizer, speech.canvas_length,
                                cfg.max_seconds, deadline, progress=progress)  # fmt: skip
        print(f"prefetch: whisper frames of {early} clips while the data was made ({time.perf_counter() - t:.0f} s "
              f"until {cfg.wait_for})", file=sys.stderr)  # fmt: skip
    utterances = read_manifest(cfg.manifest)
    examples, dropped = prepare_examples(utterances, tokenizer, speech.canvas_length, cfg.max_seconds)
    if not examples:
        raise SystemExit(f"no usable clips in {cfg.manifest} (all {dropped} too long for the canvas or the window)")
    cache.ensure(examples, progress=progress)

    decay = [p for n, p in params.items() if p.ndim >= 2]
    no_decay = [p for n, p in params.items() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        fused=str(cfg.device).startswith("cuda") or None,  # one kernel per step on a GPU instead of hundreds
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if state is not None:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["trainable"][name])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = int(state["step"])
        _truncate_log(out / LOG, step)
    elif (out / LOG).exists():
        (out / LOG).unlink()

    n_train = sum(p.numel() for p in params.values())
    if progress:
        print(
            f"{cfg.model} ({cfg.train}): {n_train / 1e6:.2f} M trainable parameters; {len(examples)} clips "
            f"({dropped} dropped); canvas {speech.canvas_length} ({cfg.canvas}); steps {step} -> {cfg.steps}",
            file=sys.stderr,
        )
    eval_utts = read_manifest(cfg.eval_manifest)[: cfg.eval_count] if cfg.eval_manifest and cfg.eval_every else []
    history: list[dict] = []
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not progress, file=sys.stderr)
    speech.train()
    speech.whisper.eval()
    started = time.perf_counter()
    first_step, timed_from = step, None
    full_from = max(first_step, cfg.ctc_steps)  # the first step with every loss (--ctc-steps: CTC only before it)
    # --time-budget times 20 steps with every loss after 5 warm-up steps and any profiled ones (profiling slows them)
    timing_from = full_from + 5 + (cfg.profile_steps + 2 if cfg.profile_steps else 0)
    losses_fn = torch.compile(compute_losses, backend=cfg.compile) if cfg.compile else compute_losses
    profiler = None
    while step < cfg.steps:
        if cfg.profile_steps and step == full_from + 2:  # steps with every loss, not --ctc-steps' CTC-only ones
            profiler = start_profiler(cfg.device)
        elif profiler is not None and step == full_from + 2 + cfg.profile_steps:
            write_profile(profiler, out / "profile.txt", cfg.device, f"{cfg.profile_steps} training steps", progress)
            profiler = None
        if cfg.time_budget and step == timing_from:
            timed_from = time.perf_counter()
        elif cfg.time_budget and timed_from is not None and step == timing_from + 20:  # fit --steps to the budget
            per_step = (time.perf_counter() - timed_from) / 20
            left = cfg.time_budget - (time.perf_counter() - run_started)
            cfg = dataclasses.replace(cfg, steps=step + max(1, int(0.95 * left / per_step)))
            bar.total = cfg.steps
            bar.refresh()
            if progress:
                print(f"\n{per_step:.3f} s/step: training to step {cfg.steps} within the time budget", file=sys.stderr)
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        pick = torch.randint(0, len(examples), (cfg.batch_size,), generator=generator).tolist()
        chosen = [examples[i] for i in pick]
        batch = make_batch(chosen, speech.prompt, speech.canvas_length, cfg.pad_weight, speech.projector.subsampling)
        optimizer.zero_grad(set_to_none=True)
        try:
            phase = cfg if step >= cfg.ctc_steps else dataclasses.replace(cfg, w_diffusion=0.0, w_ar=0.0)
            with torch.autocast(torch.device(cfg.device).type, torch.bfloat16, enabled=cfg.autocast == "bfloat16"):
                losses = losses_fn(speech, cache.load(chosen), batch, phase, generator)
            losses["total"].backward()
        except torch.OutOfMemoryError:
            # The first steps show whether a batch fits: halve it then (rather than lose the run), not later.
            if step >= full_from + 5 or cfg.batch_size < 2:
                raise
            losses = None
            optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            cfg = dataclasses.replace(cfg, batch_size=cfg.batch_size // 2)
            print(f"\nout of memory at step {step + 1}: batch size now {cfg.batch_size}", file=sys.stderr)
            continue
        except Exception as exc:  # noqa: BLE001 - a failed compilation must not end the run: go on eagerly
            if losses_fn is compute_losses or step >= full_from + 5:
                raise
            losses_fn = compute_losses
            optimizer.zero_grad(set_to_none=True)
            print(f"\n--compile {cfg.compile} failed at step {step + 1} ({type(exc).__name__}: {str(exc)[:300]}); "
                  "training on without it", file=sys.stderr)  # fmt: skip
            continue
        grad_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip or float("inf"))
        optimizer.step()
        step += 1
        row = {"step": step, **{k: round(float(v.detach()), 5) for k, v in losses.items()}, "lr": lr,
               "grad_norm": round(float(grad_norm), 4), "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
        history.append(row)
        if step % cfg.log_every == 0 or step == cfg.steps:
            _append_log(out / LOG, row)
        bar.set_postfix({k: f"{row[k]:.3f}" for k in ("total", "diffusion", "ar", "ctc") if k in row})
        bar.update(1)
        if eval_utts and step % cfg.eval_every == 0:
            _append_log(out / LOG, {"step": step, **evaluate_now(speech, tokenizer, features, eval_utts, cfg)})
            speech.train()
            speech.whisper.eval()
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt_path, step, params, optimizer, generator, cfg)
            export(speech, tokenizer, cfg, out)
    bar.close()
    if profiler is not None:
        write_profile(profiler, out / "profile.txt", cfg.device, f"{step - full_from - 2} training steps", progress)
    return RunResult(step, history, out)


def start_profiler(device: str):
    """A started ``torch.profiler`` recording CPU operators, and CUDA kernels on a GPU."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(device).startswith("cuda") else [])
    profiler = profile(activities=activities)
    profiler.start()
    return profiler


def write_profile(profiler, path: Path, device: str, what: str, progress: bool = False) -> str:
    """Stop ``profiler`` and write its operator table (sorted by device time on CUDA) under the line "``what`` on
    ``device``" to ``path``; returns the table."""
    profiler.stop()
    key = "self_cuda_time_total" if str(device).startswith("cuda") else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=key, row_limit=30)
    path.write_text(f"{what} on {device}\n{table}\n", encoding="utf-8")
    if progress:
        print(f"\nprofile of {what} ({path}):\n{table}", file=sys.stderr)
    return table


def evaluate_now(speech: SpeechModel, tokenizer, features, utterances: list[Utterance], cfg: TrainConfig) -> dict:
    """WER/CER of the model as it is now on a few utterances (``eval_steps`` denoising steps)."""
    from .evaluate import evaluate
    from .pipeline import Pipeline

    speech.eval()
    pipe = Pipeline(speech, tokenizer, features, name="training", device=cfg.device, trim_encoder=trims_encoder(cfg))
    result = evaluate(pipe, utterances, cfg.eval_steps, seed=0, warmup=False)
    return {"eval_wer": round(result.rates.wer, 2), "eval_cer": round(result.rates.cer, 2),
            "eval_example": result.utterances[0].hypothesis[:80]}  # fmt: skip


# --- command line ---------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m asr.train", description="Train the projector + LoRA or a small model.")
    p.add_argument("--manifest", required=True, help="TSV (audio<TAB>text) or JSONL (audio, text) of training clips")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.jsonl, exports, frame cache")
    p.add_argument("--model", default=d.model, help="tiny-random, small, new-adapter, an adapter path/hub id, or an "
                   "exported small-model folder (OUT/model) to train further")  # fmt: skip
    p.add_argument("--train", default=None, choices=MODES, help="default: all for small, projector+lora otherwise")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (its settings win)")
    p.add_argument("--profile-steps", type=int, default=0, help="profile this many steps (after 2 warm-up steps) "
                   "with torch.profiler into OUT/profile.txt")  # fmt: skip
    p.add_argument("--compile", nargs="?", const="inductor", choices=["inductor", "aot_eager", "eager"],
                   help="torch.compile the forward and backward of the losses (default backend inductor; the "
                   "first steps compile: ~3 min on 2 CPU cores for the small model, then 20 %% faster there; made "
                   "for the GPU, where eager steps are launch-bound); a failed compilation falls back to "
                   "eager")  # fmt: skip
    p.add_argument("--autocast", choices=["bfloat16"], help="compute the losses under torch.autocast in bfloat16 "
                   "(weights and optimizer stay in --dtype): ~1.25x faster steps on a CPU with AVX512-BF16, slower on "
                   "one without (see asr.pipeline.cpu_bf16_default)")  # fmt: skip
    p.add_argument("--prefetch", help="a manifest another process is still writing (train/make_data.py appends a "
                   "row per finished clip): compute its clips' whisper frames as they come, until --wait-for exists, "
                   "then read --manifest (its clips' frames mostly done)")  # fmt: skip
    p.add_argument("--wait-for", help="with --prefetch: the file whose existence says the data is complete")
    p.add_argument("--time-budget", type=float, help="seconds for the whole run (model, frames, steps): --steps is "
                   "set from the time of 20 steps with every loss, after 5 warm-up steps and any profiled ones (the "
                   "LR schedule follows it)")  # fmt: skip
    for name in ("batch_size", "lr", "warmup", "weight_decay", "grad_clip", "w_diffusion", "w_ar", "w_ctc", "ctc_steps",
                 "pad_weight", "gamma_power", "self_conditioning", "lora_rank", "lora_alpha", "canvas_length", "seed",
                 "save_every", "log_every", "threads", "hidden", "layers", "heads", "experts", "projector_hidden",
                 "eval_every", "eval_count", "eval_steps", "max_seconds", "min_lr_ratio", "frame_mask",
                 "channel_dropout"):  # fmt: skip
        kind = {int: int, float: float}.get(type(getattr(d, name)), int)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(d, name))
    helps = {
        "cache_dir": "whisper-output cache folder (default OUT/frames), or 'memory': kept on --device",
        "tokenizer": "byte or a tokenizer folder (train/make_tokenizer.py): a new small model's (default byte); with "
        "--model FOLDER another vocabulary for it (default its own): embeddings rebuilt from the old ones, every other "
        "weight kept",
    }
    for name in ("cache_dir", "cache_dtype", "device", "whisper", "tokenizer", "backbone", "whisper_id", "dtype",
                 "eval_manifest"):  # fmt: skip
        p.add_argument("--" + name.replace("_", "-"), default=getattr(d, name), help=helps.get(name))
    p.add_argument("--canvas", choices=M.CANVASES, help="packed: the transcript from the canvas's first position, then "
                   "EOS, then pad (the released adapter's); aligned: one position per audio slot, each id where the "
                   "CTC head's best path emits it (the canvas length is then the slot count). Default: as the model "
                   "given was trained, else packed")  # fmt: skip
    p.add_argument("--subsampling", type=int, choices=[1, 2, 4, 8], help="whisper frames per audio slot: a new "
                   "small model's (default 8: 6.25 slots per second), or, with --model FOLDER, a new rate for its "
                   "projector (convolutions re-strided, weights kept; e.g. 4: every other slot is exactly an x8 "
                   "slot); an aligned canvas takes the new slot count")  # fmt: skip
    p.add_argument("--projector-attention", type=int, default=d.projector_attention, help="transformer blocks at the "
                   "projector's end (backbone width): a new small model's, or, with --model FOLDER, how many its "
                   "projector should end in (new ones start as the identity, trained weights kept)")  # fmt: skip
    p.add_argument("--ctc-train-head", action="store_true", help="the CTC loss also trains the lm_head (a small "
                   "model's tied embeddings; --train all), which the published recipe reads frozen")  # fmt: skip
    p.add_argument("--trim-encoder", action=argparse.BooleanOptionalAction, default=None,
                   help="whisper encodes only each batch's audio (+1 s), a silent window's frames fill the rest, as "
                   "asr.load runs small models (default: for --train all)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = vars(parser().parse_args(argv))
    resume, quiet = args.pop("resume"), args.pop("quiet")
    if args["train"] is None:
        small = args["model"] == "small" or small_model_folder(args["model"]) is not None
        args["train"] = "all" if small else "projector+lora"
    if bool(args["prefetch"]) != bool(args["wait_for"]):
        parser().error("--prefetch and --wait-for go together")
    result = train(TrainConfig(**args), resume=resume, progress=not quiet)  # train() applies continue_settings
    last = result.history[-1] if result.history else {}
    print(
        f"step {result.step}: "
        + " ".join(f"{k} {last[k]:.4f}" for k in ("total", "diffusion", "ar", "ctc") if k in last)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
