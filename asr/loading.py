"""Loading: the real model from the hub or a folder, the adapter checkpoint, and the tiny random stack.

``asr.load(name)`` resolves ``name`` as:

- ``"tiny-random"``: a ~0.3 M-parameter stack of the real classes with random weights, built in code (tests, CI).
  Its transcripts are noise by construction; it is never presented as a real model.
- ``"mini"``: the small model trained by this project (``asr/mini/model``), or any folder holding a small model
  exported by :mod:`asr.train` (``speech.json``, ``backbone/``, ``projector.safetensors``, ``tokenizer/``);
- a path to ``diffusion_asr_small.pt`` or to a folder holding it: that adapter on the real backbone and encoder;
- a hub id (default ``interfaze-ai/diffusion-gemma-asr-small``): the adapter downloaded with ``HF_TOKEN``.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path

import torch
from transformers import DiffusionGemmaForBlockDiffusion, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from . import model as M
from .decoding import Lexicon
from .model import Projector, ProjectorLayoutError, SpeechModel

DEFAULT_MODEL = "interfaze-ai/diffusion-gemma-asr-small"
ADAPTER_FILE = "diffusion_asr_small.pt"
BACKBONE = "google/diffusiongemma-26B-A4B-it"
WHISPER = "openai/whisper-small"
DEFAULT_CANVAS = 192  # the model card's canvas; a checkpoint's "canvas_length" entry overrides it
MINI_DIR = Path(__file__).parent / "mini" / "model"
SMALL_MODEL_INFO = "speech.json"


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do."""


class AdapterError(ModelLoadError):
    """The adapter checkpoint does not fit the model (missing/unexpected keys, wrong shapes)."""


_cache: dict[tuple, object] = {}
_lock = threading.Lock()


def load(
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: torch.dtype | None = None,
    *,
    backbone: str = BACKBONE,
    whisper: str = WHISPER,
    canvas_length: int | None = None,
    lora_alpha: float | None = None,
):
    """Load (once per argument set, then from cache) and return a :class:`asr.Pipeline`.

    ``device="auto"`` picks CUDA when present; ``dtype`` defaults to bfloat16 on CUDA and float32 on CPU.
    """
    from .pipeline import Pipeline, cpu_bf16_default

    auto = device == "auto"
    device = resolve_device(device)
    small = small_model_folder(model) is not None
    if auto and device == "cpu" and model != "tiny-random" and backbone != "tiny-random":
        if not small:
            _fetch(model, ADAPTER_FILE, None, gated=True, download=False)  # a bad local path is the first problem
            raise ModelLoadError(
                f"{model} runs on the 26 B-parameter {backbone} backbone, which needs ~52 GB of GPU memory (bf16), "
                "and no CUDA GPU was found. Pass device='cpu' to try anyway (~110 GB of RAM), or use 'mini'."
            )
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    key = (model, device, dtype, backbone, whisper, canvas_length, lora_alpha)
    with _lock:
        if key not in _cache:
            speech, tokenizer, features = build(model, device, dtype, backbone, whisper, canvas_length, lora_alpha)
            label = model
            if small:
                label += " (small model trained by this project)"
            if "tiny-random" in (model, backbone):
                label += " (random weights: output is noise, for tests only)"
            speech = _to(speech, device, dtype).eval()
            use_kernels(speech.backbone, device)
            bf16 = small and device == "cpu" and dtype == torch.float32 and cpu_bf16_default()
            trim = small and os.environ.get("ASR_TRIM_ENCODER", "1") != "0"
            draw = "cdf" if small and device == "cpu" else "exact"  # the sampler's time on the CPU (DenoiseOptions)
            _cache[key] = Pipeline(
                speech, tokenizer, features, name=label, device=device, cpu_bf16=bf16, trim_encoder=trim, draw=draw
            )
        return _cache[key]


def use_kernels(backbone: torch.nn.Module, device: str) -> str:
    """On CUDA, run the backbone's RMSNorms and MoE experts as :mod:`asr.kernels`' Triton kernels (the benchmark's
    ``-fused`` cases on an H200: one window 0.360 -> 0.254 s, 20 windows 2.76 -> 2.46 s; bench/RESULTS.md; they round
    differently, as transformers' own experts implementations differ among themselves); ``ASR_KERNELS=off`` keeps
    transformers' own. Returns what runs (``"fused"`` or ``"transformers"``). Without triton: transformers', with a
    warning. A kernel that fails at run time falls back by itself (``asr.kernels.FAILED``)."""
    if not str(device).startswith("cuda") or os.environ.get("ASR_KERNELS", "fused").lower() in ("off", "0", "none"):
        return "transformers"
    try:
        from .kernels import use_fused  # needs triton, which CUDA builds of torch bring
    except ImportError as exc:
        warnings.warn(f"asr.kernels unavailable ({exc}); the backbone runs transformers' kernels", stacklevel=2)
        return "transformers"
    return use_fused(backbone)


def small_model_folder(model: str) -> Path | None:
    """The folder of a small model (``mini``, the shipped one, or a folder holding ``speech.json``), else None."""
    if model == "mini":
        return MINI_DIR
    return Path(model) if (Path(model) / SMALL_MODEL_INFO).is_file() else None


def build(model, device, dtype, backbone=BACKBONE, whisper=WHISPER, canvas_length=None, lora_alpha=None):
    """Build the parts of a pipeline: ``(SpeechModel, tokenizer, feature extractor)``."""
    if model == "tiny-random":
        return build_tiny(seed=0)
    folder = small_model_folder(model)
    if folder is not None:
        return load_small_model(folder, canvas_length)
    ckpt = read_adapter(_fetch(model, ADAPTER_FILE, os.environ.get("HF_TOKEN") or None, gated=True))
    if backbone == "tiny-random":
        whisper_enc, bb, tokenizer, features = _tiny_parts(seed=0, canvas_length=canvas_length or 16)
    else:
        whisper_enc, bb, tokenizer, features = real_parts(backbone, whisper, device, dtype)
        bb.config.canvas_length = canvas_length or int(ckpt.get("canvas_length", DEFAULT_CANVAS))
    eos = bb.generation_config.eos_token_id or bb.config.text_config.eos_token_id
    prompt_text = {"prefix": ckpt["prompt"][0], "suffix": ckpt["prompt"][1]} if "prompt" in ckpt else {}
    prompt = M.prompt_format_from_tokenizer(tokenizer, eos_ids=eos if isinstance(eos, list) else [eos], **prompt_text)
    projector = adapter_projector(ckpt)
    try:
        speech = SpeechModel(whisper_enc, projector, bb, prompt)
    except ProjectorLayoutError as exc:
        raise AdapterError(f"projector: {exc}") from exc
    load_lora(bb, ckpt, lora_alpha)
    return speech, tokenizer, features


def _to(speech: SpeechModel, device: str, dtype: torch.dtype) -> SpeechModel:
    """Move to ``device`` and cast the parameters (not the buffers: rotary ``inv_freq`` stays float32, as
    ``from_pretrained`` keeps it; a bf16 ``inv_freq`` shifts RoPE angles at long positions)."""
    speech.to(device)
    with torch.no_grad():
        for param in speech.parameters():
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
    return speech


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


# --- tiny random stack ---------------------------------------------------------------------------------------------


def byte_tokenizer(vocab_size: int = 512):
    """A byte-level tokenizer (256 bytes + Gemma-style specials) built in code, for small backbones."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    markers = ["<|turn>", "<turn|>", *M.AUDIO_TOKENS]
    for tok in markers:
        vocab[tok] = len(vocab)
    if len(vocab) > vocab_size:
        raise ValueError(f"byte tokenizer needs {len(vocab)} ids, vocab_size is {vocab_size}")
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    tok.add_special_tokens({"additional_special_tokens": markers})
    return tok


def _tiny_parts(seed: int = 0, canvas_length: int = 16):
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        whisper = WhisperEncoder(M.tiny_whisper_config())
        backbone = DiffusionGemmaForBlockDiffusion(M.tiny_backbone_config(canvas_length=canvas_length))
    finally:
        torch.random.set_rng_state(gen_state)
    tokenizer = byte_tokenizer(backbone.config.text_config.vocab_size)
    return whisper, backbone, tokenizer, WhisperFeatureExtractor(feature_size=80)


def build_tiny(seed: int = 0, canvas_length: int = 16) -> tuple[SpeechModel, object, WhisperFeatureExtractor]:
    """The tiny-random stack: real WhisperEncoder, Projector and DiffusionGemmaForBlockDiffusion, random weights."""
    whisper, backbone, tokenizer, features = _tiny_parts(seed, canvas_length)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed + 1)
    try:
        projector = Projector(
            M.default_projector_layout(whisper.config.d_model, 48, backbone.config.text_config.hidden_size)
        )
    finally:
        torch.random.set_rng_state(gen_state)
    prompt = M.prompt_format_from_tokenizer(tokenizer, eos_ids=[tokenizer.eos_token_id])
    return SpeechModel(whisper, projector, backbone, prompt), tokenizer, features


# --- a small model folder (asr.train's export) ---------------------------------------------------------------------


def load_small_model(folder: Path, canvas_length: int | None = None):
    """A complete small model from ``folder``: ``speech.json`` (prompt ids, canvas, whisper folder), ``backbone/``,
    ``projector.safetensors`` and ``tokenizer/``; the weight files may be int8 (``model.int8.safetensors``,
    ``projector.int8.safetensors``: :func:`quantize_int8`). The whisper encoder folder is looked up beside the
    model."""
    from transformers import AutoTokenizer, DiffusionGemmaConfig

    info_path = folder / SMALL_MODEL_INFO
    if not info_path.is_file():
        if folder == MINI_DIR:
            raise ModelLoadError(f"the small model 'mini' is not in this installation ({folder} is missing)")
        raise ModelLoadError(f"{folder} holds no {SMALL_MODEL_INFO}")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        whisper, features = load_whisper(info["whisper"], folder, seed=int(info.get("train", {}).get("seed", 0)))
        backbone = DiffusionGemmaForBlockDiffusion.from_pretrained(
            None, config=DiffusionGemmaConfig.from_pretrained(folder / "backbone"),
            state_dict=read_weights(weights_file(folder / "backbone", "model")), dtype=torch.float32,
        )  # fmt: skip
        if (folder / "backbone" / "generation_config.json").is_file():  # from_pretrained(folder) would read it
            backbone.generation_config = type(backbone.generation_config).from_pretrained(folder / "backbone")
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        layout = [M.LayerSpec(**spec) for spec in info["projector_layout"]] if "projector_layout" in info else None
        projector = adapter_projector({"projector": read_weights(weights_file(folder, "projector"))}, layout).float()
        prompt = M.PromptFormat(**info["prompt"])
        lexicon = read_lexicon(info.get("lexicon"), folder)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"the small model in {folder} is incomplete or unreadable: {exc}") from exc
    backbone.config.canvas_length = canvas_length or int(info.get("canvas_length", backbone.config.canvas_length))
    try:
        speech = SpeechModel(
            whisper, projector, backbone, prompt, canvas=info.get("canvas", "packed"),
            ctc_weight=float(info.get("ctc_weight", 0.0)), lexicon=lexicon,
        )  # fmt: skip
    except (ProjectorLayoutError, ValueError, TypeError) as exc:
        raise AdapterError(f"{folder / SMALL_MODEL_INFO}: {exc}") from exc
    return speech, tokenizer, features


# --- weight files: as exported (float16), or int8 with a scale per row --------------------------------------------

INT8_SCALE = ".int8_scale"  # an int8 tensor NAME is stored beside its float16 scales NAME + INT8_SCALE
INT8_FILE = ".int8.safetensors"  # the file name's ending: not a file that from_pretrained would misread


def weights_file(folder: Path, stem: str) -> Path:
    """``folder/STEM.safetensors``, or its int8 form ``folder/STEM.int8.safetensors`` where only that one is there."""
    plain = folder / f"{stem}.safetensors"
    int8 = folder / f"{stem}{INT8_FILE}"
    return int8 if int8.is_file() and not plain.is_file() else plain


def quantize_int8(tensors: dict[str, torch.Tensor], min_size: int = 4096) -> dict[str, torch.Tensor]:
    """Weight-only int8 storage (half of float16's size), reversed by :func:`read_weights`.

    Each floating tensor of two or more dimensions and at least ``min_size`` elements becomes int8 with one float16
    scale per row, ``max|row| / 127``: a row is a vector along the last dimension (a linear layer's input, an
    embedding), or where that dimension is under 64 (a convolution's kernel), a slice along the first. Reading it
    back is off by at most half a step, ``max|row| / 254``. Other tensors (biases, norms) are kept as they are."""
    out = {}
    for name, t in tensors.items():
        if not t.is_floating_point() or t.dim() < 2 or t.numel() < min_size:
            out[name] = t
            continue
        t = t.float()
        dims = (-1,) if t.shape[-1] >= 64 else tuple(range(1, t.dim()))
        scale = (t.abs().amax(dim=dims, keepdim=True) / 127).to(torch.float16)
        safe = torch.where(scale > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
        out[name] = torch.round(t / safe).clamp(-127, 127).to(torch.int8)
        out[name + INT8_SCALE] = scale
    return out


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; int8 ones stored with their scales (:func:`quantize_int8`) come back as
    float32."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    for name in [n for n in tensors if n.endswith(INT8_SCALE)]:
        scale = tensors.pop(name)
        base = name.removesuffix(INT8_SCALE)
        tensors[base] = tensors[base].float() * scale.float()
    return tensors


def read_lexicon(spec: dict | None, folder: Path) -> Lexicon | None:
    """``speech.json``'s ``lexicon`` entry (``{"file": "lexicon.tsv.gz", "alpha": ..., "beta": ..., ...}``, the file
    beside ``speech.json``) as a :class:`asr.decoding.Lexicon`; None without one."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("file"), str) or Path(spec["file"]).name != spec["file"]:
        raise ValueError(f"'lexicon' must be an object naming its 'file' beside speech.json, got {spec!r}")
    weights = {k: v for k, v in spec.items() if k != "file"}
    return Lexicon.read(folder / spec["file"], **weights)


def load_whisper(
    spec: str, folder: Path | None = None, seed: int = 0
) -> tuple[WhisperEncoder, WhisperFeatureExtractor]:
    """A whisper encoder and its feature extractor: ``tiny-random`` (the tests' one-layer encoder) or an exported
    folder (``config.json`` + ``model.safetensors``), looked up as given, beside ``folder``, then in ``asr/mini``."""
    if spec == "tiny-random":
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            return WhisperEncoder(M.tiny_whisper_config()).eval(), WhisperFeatureExtractor(feature_size=80)
        finally:
            torch.random.set_rng_state(state)
    candidates = [Path(spec), Path(__file__).parent / "mini" / Path(spec).name]
    if folder is not None:
        candidates.insert(0, folder / spec)
    path = next((c for c in candidates if (c / "config.json").is_file()), None)
    if path is None:
        raise ModelLoadError(
            f"the whisper encoder {spec!r} was not found (looked in {', '.join(map(str, candidates))})"
        )
    from .whisper_ct2 import load_whisper_encoder  # here: `python -m asr.whisper_ct2` imports asr first

    encoder = load_whisper_encoder(path)
    if (path / "preprocessor_config.json").is_file():
        features = WhisperFeatureExtractor.from_pretrained(path)
    else:
        features = WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)
    return encoder, features


# --- adapter checkpoint --------------------------------------------------------------------------------------------


def read_adapter(path: str | os.PathLike) -> dict:
    """Read ``diffusion_asr_small.pt`` (``{"projector": state_dict, "lora": state_dict, ...}``) safely."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise AdapterError(f"{path} is not a readable adapter checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or "projector" not in ckpt:
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise AdapterError(f"{path} should hold a dict with 'projector' and 'lora' state dicts; found {found}")
    return ckpt


def adapter_projector(ckpt: dict, layout: list[M.LayerSpec] | None = None) -> Projector:
    """The checkpoint's projector, loaded strictly; its layout as given (a small model's ``speech.json`` records it,
    strides included), else read from the keys and shapes (the released adapter: x8)."""
    proj_state = ckpt["projector"]
    try:
        projector = Projector(layout or Projector.layout_from_state_dict(proj_state))
    except ProjectorLayoutError as exc:
        raise AdapterError(f"projector: {exc}") from exc
    _strict_load(projector, Projector.canonical_keys(proj_state), "projector")
    return projector


def load_lora(backbone: torch.nn.Module, ckpt: dict, lora_alpha: float | None = None) -> None:
    """Inject the checkpoint's LoRA (targets and ranks read from its keys) into ``backbone`` and load it.

    Raises :class:`AdapterError` listing missing/unexpected keys and shape mismatches.
    """
    lora_state = {M.normalise_lora_key(k): v for k, v in (ckpt.get("lora") or {}).items()}
    if not lora_state:
        return
    ranks = M.lora_layout(lora_state)
    modules = dict(backbone.named_modules())
    missing_targets = sorted(n for n in ranks if n not in modules)
    if missing_targets:
        raise AdapterError(
            f"LoRA targets {len(missing_targets)} modules the backbone does not have, e.g. {missing_targets[:5]}"
        )
    M.inject_lora(backbone, ranks, lora_alpha if lora_alpha is not None else ckpt.get("lora_alpha"))
    params = {M.normalise_lora_key(n): p for n, p in backbone.named_parameters() if ".lora_" in n}
    problems = _key_problems(set(params), set(lora_state))
    problems += [
        f"shape of {k}: checkpoint {tuple(lora_state[k].shape)}, model {tuple(params[k].shape)}"
        for k in sorted(set(params) & set(lora_state))
        if params[k].shape != lora_state[k].shape
    ]
    if problems:
        raise AdapterError("LoRA weights do not fit the backbone:\n  " + "\n  ".join(problems[:20]))
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(lora_state[key])


def _strict_load(module: torch.nn.Module, state: dict, what: str) -> None:
    own = module.state_dict()
    problems = _key_problems(set(own), set(state))
    problems += [
        f"shape of {k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    ]
    if problems:
        raise AdapterError(f"{what} weights do not fit:\n  " + "\n  ".join(problems[:20]))
    module.load_state_dict(state)


def _key_problems(expected: set[str], found: set[str]) -> list[str]:
    out = []
    if missing := sorted(expected - found):
        out.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected := sorted(found - expected):
        out.append(
            f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
        )
    return out


def save_adapter(speech: SpeechModel, path: str | os.PathLike, **extra) -> None:
    """Write the projector and LoRA weights in the released checkpoint's format."""
    lora = {M.normalise_lora_key(n): p.detach().cpu() for n, p in speech.backbone.named_parameters() if ".lora_" in n}
    projector = {k: v.detach().cpu() for k, v in speech.projector.state_dict().items()}
    torch.save({"projector": projector, "lora": lora, **extra}, path)


# --- the real model ------------------------------------------------------------------------------------------------


def real_parts(backbone_id: str, whisper_id: str, device: str, dtype: torch.dtype):
    """The real backbone, whisper encoder, tokenizer and feature extractor from the hub (or its cache)."""
    from transformers import AutoTokenizer, WhisperModel

    token = os.environ.get("HF_TOKEN") or None
    try:
        tokenizer = AutoTokenizer.from_pretrained(backbone_id, token=token)
        features = WhisperFeatureExtractor.from_pretrained(whisper_id, token=token)
        whisper = WhisperModel.from_pretrained(whisper_id, token=token, dtype=dtype).get_encoder()
        # On ZeroGPU the weights are loaded first and moved to CUDA at module level (by asr.load), where the move is
        # intercepted and streamed in per call; elsewhere they go straight to the device.
        zero_gpu = bool(os.environ.get("SPACES_ZERO_GPU"))
        backbone = DiffusionGemmaForBlockDiffusion.from_pretrained(
            backbone_id, token=token, dtype=dtype, device_map=None if zero_gpu else device
        )
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(
            f"not enough GPU memory for {backbone_id} in {dtype} (~52 GB in bf16): {exc}. "
            "Use a larger GPU, or ASR_MODEL=tiny-random to try the interface."
        ) from exc
    except OSError as exc:
        raise ModelLoadError(_explain_hub_error(backbone_id, exc)) from exc
    return whisper, backbone, tokenizer, features


def _fetch(model: str, filename: str, token: str | None, gated: bool, download: bool = True) -> Path | None:
    """The local file for ``model`` (a file, a folder holding ``filename``, or a hub id, downloaded)."""
    path = Path(model)
    if path.is_file():
        return path
    if path.is_dir():
        if not (path / filename).is_file():
            raise ModelLoadError(f"{path} holds no {filename}")
        return path / filename
    if model.startswith((".", "/")) or model.count("/") != 1:
        raise ModelLoadError(f"{model!r} is neither a local file/folder nor a hub id like 'owner/name'")
    if not download:
        return None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model, filename, token=token))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(_explain_hub_error(model, exc, gated)) from exc


def _explain_hub_error(repo: str, exc: Exception, gated: bool = False) -> str:
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else name
    if "Gated" in name or "401" in text or "403" in text or "gated" in text.lower():
        return (
            f"{repo} is gated: accept its terms at https://huggingface.co/{repo} and set HF_TOKEN to a token of "
            f"that account ({text})"
        )
    if "RepositoryNotFound" in name or "404" in text:
        return f"{repo} was not found on the hub (or is private and HF_TOKEN is missing) ({text})"
    if any(s in name for s in ("Connection", "Offline", "LocalEntryNotFound", "Timeout")) or "offline" in text.lower():
        return f"cannot reach the Hugging Face hub to download {repo} and it is not in the local cache ({text})"
    hint = " (set HF_TOKEN if it is gated)" if gated and not os.environ.get("HF_TOKEN") else ""
    return f"could not load {repo}: {text}{hint}"
