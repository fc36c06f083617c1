"""The model: frozen whisper encoder -> projector -> audio slots of the DiffusionGemma prompt -> prefilled KV cache.

The denoising of the transcript canvas lives in :mod:`asr.decoding`; this module ends at the prompt's KV cache.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, WhisperConfig
from transformers.cache_utils import DynamicCache
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .decoding import Lexicon, check_ctc_weight

# Gemma 4 vocabulary ids of the audio markers (the real tokenizer is asked too; these are what it must say).
AUDIO_START_ID = 256_000  # <|audio>
AUDIO_TOKEN_ID = 258_881  # <|audio|>, one placeholder per audio embedding
AUDIO_END_ID = 258_883  # <audio|>
AUDIO_TOKENS = ("<|audio>", "<|audio|>", "<audio|>")
SUBSAMPLING = 8  # whisper frames per audio embedding
WHISPER_FRAME_RATE = 50  # whisper encoder frames per second of audio (20 ms each)
# A trimmed encoder (SpeechModel.whisper_frames(seconds=...)) runs this many positions (1 s) past the audio's end.
ENCODER_MARGIN = 50
# WhisperFeatureExtractor's (and openai-whisper's) log-mel of digital silence: log10 of the 1e-10 floor, clamped to
# 8 below the window's maximum (the same value), then (x + 4) / 4 = -1.5 everywhere (tests/test_model.py checks it).
SILENT_LOG_MEL = -1.5
# How the transcript sits on the canvas. "packed" (the released adapter): its ids from the first position, then EOS,
# then pad. "aligned" (for small models, ``asr.train --canvas aligned``): one position per audio slot, each id at the
# slot where the CTC head's best path emits it, pad elsewhere. Two equal ids are never side by side there (CTC puts a
# blank between them), so it is read as greedy CTC output is: adjacent repeats merged, pads dropped.
CANVASES = ("packed", "aligned")


class ProjectorLayoutError(ValueError):
    """A projector state dict whose layers cannot be understood."""


@dataclass(frozen=True)
class LayerSpec:
    """One projector layer: ``conv`` (Conv1d, stride ``stride``), ``linear``, ``norm`` (LayerNorm), or ``attention``
    (:class:`AttentionBlock`: ``heads`` heads, a ``ffn``-wide MLP; ``in_dim == out_dim``)."""

    kind: str
    in_dim: int
    out_dim: int
    kernel: int = 1
    stride: int = 1
    bias: bool = True
    heads: int = 0
    ffn: int = 0


def attention_spec(dim: int) -> LayerSpec:
    """An attention block of width ``dim``: heads of 64 features, an MLP 4x as wide."""
    return LayerSpec("attention", dim, dim, heads=max(1, dim // 64), ffn=4 * dim)


def default_projector_layout(in_dim: int, hidden: int, out_dim: int, subsampling: int = SUBSAMPLING) -> list[LayerSpec]:
    """Three convolutions then a two-layer MLP: 768 -> 1280 -> 2816 is ~18 M params. The convolutions have stride 2
    (x8 in time, the released adapter's layout); ``subsampling`` 4, 2 or 1 gives the last ones stride 1."""
    s1, s2, s3 = conv_strides(subsampling, 3)
    return [
        LayerSpec("conv", in_dim, hidden, 3, s1),
        LayerSpec("conv", hidden, hidden, 3, s2),
        LayerSpec("conv", hidden, hidden, 3, s3),
        LayerSpec("linear", hidden, hidden),
        LayerSpec("linear", hidden, out_dim),
    ]


def conv_strides(subsampling: int, convs: int) -> list[int]:
    """Strides of ``convs`` convolutions that subsample by ``subsampling``: 2 for the first ones, then 1."""
    if subsampling not in [2**i for i in range(convs + 1)]:
        raise ValueError(f"subsampling must be a power of two up to {2**convs}, got {subsampling}")
    return [2 if subsampling >= 2 ** (i + 1) else 1 for i in range(convs)]


def restride_layout(layout: list[LayerSpec], subsampling: int) -> list[LayerSpec]:
    """``layout`` with its convolutions' strides set for ``subsampling`` (same weights; e.g. x8 -> x4 makes the last
    convolution stride 1, so every other output of the x4 projector is exactly an output of the x8 one)."""
    strides = iter(conv_strides(subsampling, sum(s.kind == "conv" for s in layout)))
    return [dataclasses.replace(s, stride=next(strides)) if s.kind == "conv" else s for s in layout]


def audio_slots(seconds: float, subsampling: int = SUBSAMPLING) -> int:
    """The audio slots that cover ``seconds`` of audio at the start of a window (whisper: 50 frames per second),
    plus one for the frame the projector's convolutions smear over the audio's end."""
    return math.ceil(seconds * WHISPER_FRAME_RATE / subsampling) + 1


def layout_subsampling(layout: list[LayerSpec]) -> int:
    """Whisper frames per audio embedding in a projector of ``layout``: the product of its convolutions' strides."""
    return math.prod(s.stride for s in layout if s.kind == "conv")


def layout_attention_blocks(layout: list[LayerSpec]) -> int:
    """How many attention blocks a projector of ``layout`` has."""
    return sum(s.kind == "attention" for s in layout)


def layout_slots(layout: list[LayerSpec], frames: int) -> int:
    """How many embeddings ``frames`` whisper frames become in a projector of ``layout`` (no module needed)."""
    for spec in layout:
        if spec.kind == "conv":
            pad = spec.kernel // 2
            frames = (frames + 2 * pad - spec.kernel) // spec.stride + 1
    return frames


class AttentionBlock(nn.Module):
    """A pre-norm transformer block over the audio slots: ``x + attn(norm1(x))``, then ``x + fc2(gelu(fc1(norm2(x))))``.

    Whisper's frames carry their positions (its sinusoidal embeddings), so the block adds none. Its two output
    projections start at zero: a new block is the identity, and a trained projector gains one without changing.
    """

    def __init__(self, dim: int, heads: int, ffn: int, bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, bias=bias, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn, bias=bias)
        self.fc2 = nn.Linear(ffn, dim, bias=bias)
        for out in (self.attn.out_proj, self.fc2):
            nn.init.zeros_(out.weight)
            if out.bias is not None:
                nn.init.zeros_(out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class Projector(nn.Module):
    """Whisper frames (B, T, d_whisper) -> audio embeddings (B, ceil(T / subsampling), d_backbone).

    Convolutions (each followed by GELU) subsample in time; linear layers (GELU between them) map to the backbone
    width; ``norm`` layers are LayerNorms over the feature dimension; ``attention`` layers are transformer blocks
    over the slots (:class:`AttentionBlock`), which let each slot see the whole window.
    """

    def __init__(self, layout: list[LayerSpec]):
        super().__init__()
        self.layout = list(layout)
        layers: list[nn.Module] = []
        for spec in self.layout:
            if spec.kind == "conv":
                layers.append(
                    nn.Conv1d(spec.in_dim, spec.out_dim, spec.kernel, spec.stride, spec.kernel // 2, bias=spec.bias)
                )
            elif spec.kind == "linear":
                layers.append(nn.Linear(spec.in_dim, spec.out_dim, bias=spec.bias))
            elif spec.kind == "norm":
                layers.append(nn.LayerNorm(spec.in_dim, elementwise_affine=True, bias=spec.bias))
            elif spec.kind == "attention":
                if spec.in_dim != spec.out_dim or spec.heads < 1 or spec.in_dim % spec.heads or spec.ffn < 1:
                    raise ProjectorLayoutError(f"an attention layer needs in_dim == out_dim divisible by heads: {spec}")
                layers.append(AttentionBlock(spec.in_dim, spec.heads, spec.ffn, spec.bias))
            else:
                raise ProjectorLayoutError(f"unknown projector layer kind {spec.kind!r}")
        self.layers = nn.ModuleList(layers)
        last_linear = max((i for i, s in enumerate(self.layout) if s.kind == "linear"), default=-1)
        self._activate = [s.kind == "conv" or (s.kind == "linear" and i != last_linear) for i, s in enumerate(layout)]

    @property
    def in_dim(self) -> int:
        return self.layout[0].in_dim

    @property
    def out_dim(self) -> int:
        return [s for s in self.layout if s.kind != "norm"][-1].out_dim

    @property
    def subsampling(self) -> int:
        """Whisper frames per audio embedding (the product of the convolutions' strides)."""
        return layout_subsampling(self.layout)

    def num_slots(self, frames: int) -> int:
        """How many embeddings ``frames`` whisper frames become."""
        return layout_slots(self.layout, frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_first = False
        for layer, spec, act in zip(self.layers, self.layout, self._activate, strict=True):
            if spec.kind == "conv":
                if not channels_first:
                    x, channels_first = x.transpose(1, 2), True
            elif channels_first:
                x, channels_first = x.transpose(1, 2), False
            x = layer(x)
            if act:
                x = nn.functional.gelu(x)
        return x.transpose(1, 2) if channels_first else x

    @classmethod
    def layout_from_state_dict(cls, state: dict[str, torch.Tensor]) -> list[LayerSpec]:
        """Read the layer layout from a state dict's keys and shapes (layers in the dict's order).

        3-D weights are Conv1d (stride 2 when there are three convolutions, as x8 subsampling implies), 2-D
        weights Linear, 1-D weights LayerNorm. Anything else raises :class:`ProjectorLayoutError`.
        """
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            prefix, _, leaf = key.rpartition(".")
            groups.setdefault(prefix, {})[leaf] = value
        specs: list[LayerSpec] = []
        for prefix in groups:  # a state dict keeps the modules' registration (= forward) order
            params = groups[prefix]
            if set(params) - {"weight", "bias"} or "weight" not in params:
                raise ProjectorLayoutError(
                    f"projector layer {prefix!r} has parameters {sorted(params)}; expected weight and bias"
                )
            w, has_bias = params["weight"], "bias" in params
            if w.ndim == 3:
                specs.append(LayerSpec("conv", w.shape[1], w.shape[0], w.shape[2], 0, has_bias))
            elif w.ndim == 2:
                specs.append(LayerSpec("linear", w.shape[1], w.shape[0], bias=has_bias))
            elif w.ndim == 1:
                specs.append(LayerSpec("norm", w.shape[0], w.shape[0], bias=has_bias))
            else:
                raise ProjectorLayoutError(f"projector layer {prefix!r} has a {w.ndim}-D weight {tuple(w.shape)}")
        convs = sum(s.kind == "conv" for s in specs)
        stride = round(SUBSAMPLING ** (1 / convs)) if convs else 1
        if convs and stride**convs != SUBSAMPLING:
            raise ProjectorLayoutError(f"{convs} convolutions cannot subsample x{SUBSAMPLING} with equal strides")
        return [
            LayerSpec(s.kind, s.in_dim, s.out_dim, s.kernel, stride, s.bias) if s.kind == "conv" else s for s in specs
        ]

    @staticmethod
    def canonical_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename a checkpoint's projector keys to this module's (``layers.N.weight``), in layout order; keys that
        already are this module's (``layers.N.…``, attention blocks included) stay."""
        found = [re.match(r"layers\.(\d+)\.", key) for key in state]
        if all(found):
            order = list(dict.fromkeys(int(m.group(1)) for m in found))
            if order == list(range(len(order))):
                return dict(state)
        prefixes: list[str] = []
        for key in state:
            prefix = key.rpartition(".")[0]
            if prefix not in prefixes:
                prefixes.append(prefix)
        index = {p: i for i, p in enumerate(prefixes)}
        return {f"layers.{index[k.rpartition('.')[0]]}.{k.rpartition('.')[2]}": v for k, v in state.items()}


@dataclass
class PromptFormat:
    """Token ids of the encoder prompt: ``prefix <|audio> <|audio|> x N <audio|> suffix``."""

    prefix: list[int]
    suffix: list[int]
    audio_start_id: int = AUDIO_START_ID
    audio_token_id: int = AUDIO_TOKEN_ID
    audio_end_id: int = AUDIO_END_ID
    eos_ids: list[int] = field(default_factory=lambda: [1])
    pad_id: int = 0

    def ids(self, num_slots: int) -> list[int]:
        return [
            *self.prefix,
            self.audio_start_id,
            *([self.audio_token_id] * num_slots),
            self.audio_end_id,
            *self.suffix,
        ]


# Gemma 4 chat turn asking for a transcript. The released adapter's exact training prompt is not public; a
# checkpoint may carry its own ("prompt" entry), which then replaces these two strings.
PROMPT_PREFIX = "<|turn>user\n"
PROMPT_SUFFIX = "Transcribe the audio.<turn|>\n<|turn>model\n"


def prompt_format_from_tokenizer(
    tokenizer, eos_ids: list[int], prefix: str = PROMPT_PREFIX, suffix: str = PROMPT_SUFFIX
) -> PromptFormat:
    """Build the prompt ids with ``tokenizer`` (which must know the three audio marker tokens)."""
    ids = tokenizer.convert_tokens_to_ids(list(AUDIO_TOKENS))
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer lacks the audio tokens {AUDIO_TOKENS}")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    encode = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    return PromptFormat(
        prefix=bos + encode(prefix),
        suffix=encode(suffix),
        audio_start_id=ids[0],
        audio_token_id=ids[1],
        audio_end_id=ids[2],
        eos_ids=list(eos_ids),
        pad_id=tokenizer.pad_token_id or 0,
    )


def encode_positions(whisper: WhisperEncoder, features: torch.Tensor, positions: int) -> torch.Tensor:
    """``whisper(features).last_hidden_state[:, :positions]`` as if the window ended there: the encoder's own layers
    over the first ``positions`` of its 1500 positions (the ``2 * positions`` mel frames that feed them), so attention
    sees only those. With ``positions`` 1500 it is exactly ``WhisperEncoder.forward`` (which accepts only whole
    windows; tests/test_model.py compares the two)."""
    x = nn.functional.gelu(whisper.conv1(features[..., : 2 * positions]))
    x = nn.functional.gelu(whisper.conv2(x)).permute(0, 2, 1)
    hidden = x + whisper.embed_positions.weight[:positions]
    for layer in whisper.layers:
        hidden = layer(hidden, None)
    return whisper.layer_norm(hidden)


class SpeechModel(nn.Module):
    """whisper encoder + projector + DiffusionGemma backbone (LoRA already injected, if any) + prompt format, and how
    the canvas holds the transcript (``canvas``, one of ``CANVASES``).

    ``ctc_weight`` is how the model's transcripts are read by default (``DenoiseOptions(ctc_weight=None)``): 0 takes
    the last step's argmax; > 0, for an aligned canvas, reads it jointly with the CTC head (``decoding.fuse_ctc``).
    A small model's ``speech.json`` records it (``mini``: 2, the best weight measured for it). ``lexicon``, for an
    aligned canvas, is a word lexicon that such a joint reading spells its words from by default
    (``decoding.lexicon_search``; ``speech.json``'s ``lexicon``)."""

    def __init__(
        self,
        whisper: WhisperEncoder,
        projector: Projector,
        backbone: DiffusionGemmaForBlockDiffusion,
        prompt: PromptFormat,
        canvas: str = "packed",
        ctc_weight: float = 0.0,
        lexicon: Lexicon | None = None,
    ):
        super().__init__()
        self.whisper = whisper.eval().requires_grad_(False)
        self.projector = projector
        self.backbone = backbone
        self.prompt = prompt
        self.canvas = canvas
        if check_ctc_weight(ctc_weight) > 0 and canvas != "aligned":
            raise ValueError(f"ctc_weight > 0 needs an aligned canvas, not a {canvas} one")
        self.ctc_weight = float(ctc_weight)
        if lexicon is not None and canvas != "aligned":
            raise ValueError(f"a lexicon needs an aligned canvas, not a {canvas} one")
        self.lexicon = lexicon
        hidden = backbone.config.text_config.hidden_size
        if projector.out_dim != hidden:
            raise ProjectorLayoutError(f"projector outputs {projector.out_dim} features, the backbone expects {hidden}")
        if projector.in_dim != whisper.config.d_model:
            raise ProjectorLayoutError(
                f"projector takes {projector.in_dim} features, whisper gives {whisper.config.d_model}"
            )

    @property
    def num_slots(self) -> int:
        """Audio embeddings per 30 s window (188 for whisper-small's 1500 frames)."""
        return self.projector.num_slots(self.whisper.config.max_source_positions)

    @property
    def canvas(self) -> str:
        """How the canvas holds the transcript (one of ``CANVASES``). Setting ``aligned`` also sets the canvas
        length: one position per audio slot."""
        return self._canvas

    @canvas.setter
    def canvas(self, kind: str) -> None:
        if kind not in CANVASES:
            raise ValueError(f"canvas must be one of {CANVASES}, got {kind!r}")
        self._canvas = kind
        if kind == "aligned":
            self.backbone.config.canvas_length = self.num_slots

    @property
    def canvas_length(self) -> int:
        return self.backbone.config.canvas_length

    def canvas_for(self, seconds: float) -> int:
        """The canvas positions a window holding ``seconds`` of audio needs: the whole canvas when it is packed; when
        it is aligned, the slots that cover the audio (every later position is pad by construction)."""
        if self.canvas == "aligned":
            return min(self.canvas_length, audio_slots(seconds, self.projector.subsampling))
        return self.canvas_length

    def whisper_frames(self, features: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        """whisper's outputs for log-mel features (B, n_mels, 3000): (B, 1500, d_model), in whisper's dtype.

        ``seconds``: how much of the window holds audio (the longest row's). Whisper then encodes only the positions
        that cover it plus ``ENCODER_MARGIN`` (:func:`encode_positions`), and the later positions take the encoder's
        output for a silent window (computed once). whisper always encodes 30 s; for a 5 s clip this is ~1/5 of the
        work, but it is an approximation: the audio's positions no longer attend to the padding's. Measured with
        ``mini`` (train/results/cpu-x4 section 6): WER within 1.2 points either way from 4 steps on, the encoder ~5x
        faster on a 2-core CPU. ``None``: the whole window, exactly as whisper computes it."""
        dtype = next(self.whisper.parameters()).dtype
        features = features.to(dtype)
        total = self.whisper.config.max_source_positions
        keep = total if seconds is None else min(total, math.ceil(seconds * WHISPER_FRAME_RATE) + ENCODER_MARGIN)
        if keep >= total:
            return self.whisper(features).last_hidden_state
        head = encode_positions(self.whisper, features, keep)
        tail = self._silent_frames(features.shape[1:], head.device, dtype)[:, keep:]
        return torch.cat([head, tail.expand(len(head), -1, -1)], dim=1)

    def embed_audio(self, features: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        """Log-mel features (B, n_mels, 3000) -> audio embeddings (B, slots, hidden), in the backbone's dtype;
        ``seconds``: encode only that much of the window (:meth:`whisper_frames`)."""
        frames = self.whisper_frames(features, seconds)
        proj_dtype = next(self.projector.parameters()).dtype
        emb = self.projector(frames.to(proj_dtype))
        return emb.to(self.backbone.dtype)

    def _silent_frames(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """whisper's output for a silent window (1, 1500, d_model), computed once per device, dtype and autocast
        state (``Pipeline(cpu_bf16=True)`` runs whisper under bfloat16 autocast)."""
        cache = self.__dict__.setdefault("_silence", {})
        key = (device, dtype, torch.is_autocast_enabled(device.type))
        if key not in cache:
            with torch.no_grad():
                silent = torch.full((1, *shape), SILENT_LOG_MEL, device=device, dtype=dtype)
                cache[key] = self.whisper(silent).last_hidden_state
        return cache[key]

    def ctc_logits(self, audio_embeds: torch.Tensor, detach_head: bool = False) -> torch.Tensor:
        """The training recipe's CTC head: audio embeddings through the lm_head weight (tied to the embeddings, no
        soft-capping): (B, slots, vocab); the blank is the pad id. ``detach_head``: no gradient into the weight."""
        weight = self.backbone.lm_head.weight
        return nn.functional.linear(audio_embeds, weight.detach() if detach_head else weight)

    def prompt_embeddings(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """Embed the prompt ids and put the audio embeddings in the ``<|audio|>`` rows (unscaled, like image tokens)."""
        batch, slots, _ = audio_embeds.shape
        ids = torch.tensor([self.prompt.ids(slots)] * batch, device=audio_embeds.device)
        embeds = self.backbone.model.encoder.get_input_embeddings()(ids)
        mask = (ids == self.prompt.audio_token_id).unsqueeze(-1)
        return embeds.masked_scatter(mask, audio_embeds.to(embeds.dtype))

    def prefill(self, inputs_embeds: torch.Tensor, cache: DynamicCache | None = None) -> DynamicCache:
        """Run the causal encoder over ``inputs_embeds`` (appending to ``cache``) and return the KV cache."""
        cache, inputs = self.prefill_inputs(inputs_embeds, cache)
        self.backbone.model.encoder.language_model(inputs_embeds=inputs_embeds, past_key_values=cache, **inputs)
        return cache

    def new_cache(self) -> DynamicCache:
        """An empty prompt cache for the backbone (its layer kinds: full or sliding-window attention)."""
        return DynamicCache(config=self.backbone.config.get_text_config(decoder=True))

    def prefill_inputs(
        self, inputs_embeds: torch.Tensor, cache: DynamicCache | None = None
    ) -> tuple[DynamicCache, dict[str, object]]:
        """The cache (a new one when None) and the encoder's ``attention_mask`` and ``position_ids`` for a prefill of
        ``inputs_embeds`` after what ``cache`` holds.

        The mask dict is built here: in transformers 5.23 the encoder model computes and then drops it.
        """
        encoder = self.backbone.model.encoder
        if cache is None:
            cache = self.new_cache()
        past = cache.get_seq_length()
        batch, length, _ = inputs_embeds.shape
        position_ids = torch.arange(past, past + length, dtype=torch.int32, device=inputs_embeds.device).unsqueeze(0)
        attention_mask = torch.ones((batch, past + length), dtype=torch.bool, device=inputs_embeds.device)
        masks = encoder.create_masks_for_generate(
            config=self.backbone.config,
            inputs_embeds=torch.empty((batch, length, 0), dtype=inputs_embeds.dtype, device=inputs_embeds.device),
            attention_mask=attention_mask,
            past_key_values=cache,
            position_ids=position_ids,
        )
        return cache, {"attention_mask": masks, "position_ids": position_ids}


# --- LoRA ---------------------------------------------------------------------------------------------------------

LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def lora_layout(lora_state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Module name -> rank, read from a LoRA state dict (peft's key format, with or without adapter name)."""
    ranks: dict[str, int] = {}
    for key, value in lora_state.items():
        name = normalise_lora_key(key)
        if name.endswith(".lora_A.weight"):
            ranks[name[: -len(".lora_A.weight")]] = int(value.shape[0])
    return ranks


def normalise_lora_key(key: str) -> str:
    """``base_model.model.X.lora_A.default.weight`` -> ``X.lora_A.weight``."""
    key = re.sub(r"^(base_model\.model\.)+", "", key)
    return re.sub(r"\.(lora_[AB])\.[^.]+\.weight$", r".\1.weight", key)


def inject_lora(backbone: nn.Module, ranks: dict[str, int], alpha: float | None = None) -> None:
    """Add LoRA layers (peft) at the named modules of ``backbone`` with the given ranks, in place.

    ``alpha`` defaults to the rank (scaling 1): the released checkpoint does not record its alpha.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if not ranks:
        return
    rank = max(set(ranks.values()), key=list(ranks.values()).count)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        target_modules=sorted(ranks),
        rank_pattern={f"^{re.escape(k)}$": r for k, r in ranks.items() if r != rank},
        alpha_pattern={f"^{re.escape(k)}$": (alpha if alpha is not None else r) for k, r in ranks.items() if r != rank},
        lora_dropout=0.0,
        bias="none",
    )
    inject_adapter_in_model(config, backbone)


def attention_lora_targets(
    backbone: nn.Module, projections: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
) -> list[str]:
    """Names of every encoder and decoder attention projection of ``backbone`` (the adapter's LoRA targets)."""
    pattern = re.compile(
        r"model\.(encoder\.language_model|decoder)\.layers\.\d+\.self_attn\.(" + "|".join(projections) + r")$"
    )
    return [name for name, _ in backbone.named_modules() if pattern.match(name)]


# --- configurations ---------------------------------------------------------------------------------------------


def real_backbone_config(canvas_length: int = 192) -> DiffusionGemmaConfig:
    """The architecture of google/diffusiongemma-26B-A4B-it (text part), for shape checks on the meta device."""
    text = dict(
        vocab_size=262_144, hidden_size=2816, intermediate_size=2112, num_hidden_layers=30, num_attention_heads=16,
        num_key_value_heads=8, head_dim=256, global_head_dim=512, num_global_key_value_heads=2, num_experts=128,
        top_k_experts=8, moe_intermediate_size=704, sliding_window=1024, use_bidirectional_attention="vision",
    )  # fmt: skip
    return DiffusionGemmaConfig(text_config=text, canvas_length=canvas_length)


def whisper_small_config() -> WhisperConfig:
    """openai/whisper-small: 12 encoder layers of width 768, 80 mel bins, 1500 frames per 30 s."""
    return WhisperConfig(
        d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072, decoder_layers=12,
        decoder_attention_heads=12, decoder_ffn_dim=3072, num_mel_bins=80, max_source_positions=1500,
        vocab_size=51865,
    )  # fmt: skip


def tiny_backbone_config(vocab_size: int = 512, hidden: int = 64, canvas_length: int = 16) -> DiffusionGemmaConfig:
    """A DiffusionGemma of ~200 k parameters with the real classes (see shared notes), for tests and CI."""
    text = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        layer_types=["sliding_attention", "full_attention"], num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, global_head_dim=32, num_global_key_value_heads=1, num_experts=4, top_k_experts=2,
        moe_intermediate_size=32, sliding_window=16, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )  # fmt: skip
    return small_config(text, canvas_length)


# A vision tower is always built; for audio-only models it is the smallest that instantiates (unused).
TINY_VISION = dict(
    model_type="gemma4_vision", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=2, head_dim=16, patch_size=4, pooling_kernel_size=2, position_embedding_size=64,
)  # fmt: skip


def small_config(text: dict, canvas_length: int) -> DiffusionGemmaConfig:
    """A DiffusionGemma config for the text settings ``text``, a minimal (unused) vision tower and the image marker
    ids at the top of the vocabulary, out of the audio and text ids' way."""
    vocab_size = text["vocab_size"]
    return DiffusionGemmaConfig(
        text_config=text, vision_config=TINY_VISION, canvas_length=canvas_length,
        image_token_id=vocab_size - 12, boi_token_id=vocab_size - 11, eoi_token_id=vocab_size - 10,
    )  # fmt: skip


def tiny_whisper_config() -> WhisperConfig:
    """A one-layer whisper encoder with the real time geometry (80 mels, 3000 -> 1500 frames)."""
    return WhisperConfig(
        d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500, vocab_size=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=1,
    )  # fmt: skip
