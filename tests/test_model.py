"""The model's audio side: whisper's encoder over the whole window or trimmed to the audio (SpeechModel.embed_audio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import speechlike
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

import asr
from asr import model as M
from asr.loading import build_tiny
from asr.pipeline import Pipeline


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(seed=0)


def test_encoding_every_position_is_whispers_own_forward():
    torch.manual_seed(0)
    whisper = WhisperEncoder(M.tiny_whisper_config()).eval()
    features = torch.randn(2, 80, 3000)
    with torch.no_grad():
        expected = whisper(features).last_hidden_state
        assert torch.equal(M.encode_positions(whisper, features, 1500), expected)
        # fewer positions: the same layers as if the window ended there (whisper's own forward refuses a short window)
        assert M.encode_positions(whisper, features, 200).shape == (2, 200, 32)
        with pytest.raises(ValueError):
            whisper(features[..., :400])


def test_silent_log_mel_is_what_the_feature_extractor_gives_for_silence():
    extractor = WhisperFeatureExtractor(feature_size=80)
    features = extractor(np.zeros(16_000, dtype=np.float32), sampling_rate=16_000, return_tensors="np").input_features
    assert features.shape == (1, 80, 3000)
    np.testing.assert_allclose(features, M.SILENT_LOG_MEL, atol=1e-6)


def test_a_trimmed_window_encodes_the_audio_and_takes_silence_after_it(tiny):
    speech, _, extractor = tiny
    wave = speechlike(3.0)
    features = extractor(wave, sampling_rate=16_000, return_tensors="pt").input_features
    seen = []
    hook = speech.whisper.layers[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            full = speech.embed_audio(features)
            trimmed = speech.embed_audio(features, seconds=3.0)
            again = speech.embed_audio(features, seconds=3.0)
            whole = speech.embed_audio(features, seconds=30.0)
    finally:
        hook.remove()
    keep = 3 * M.WHISPER_FRAME_RATE + M.ENCODER_MARGIN
    # full window; trimmed, then the silent window (once); trimmed again (silence cached); 30 s = the full window
    assert seen == [1500, keep, 1500, keep, 1500]
    assert torch.equal(whole, full) and torch.equal(again, trimmed)
    assert trimmed.shape == full.shape
    silent = torch.full_like(features, M.SILENT_LOG_MEL)
    with torch.no_grad():
        silence = speech.embed_audio(silent)
    # slots well past the kept positions read the silent window (the projector's convolutions blur the seam)
    slots = speech.projector.subsampling
    after = keep // slots + 2
    torch.testing.assert_close(trimmed[:, after:], silence[:, after:])
    audio = 3 * M.WHISPER_FRAME_RATE // slots
    assert not torch.allclose(trimmed[:, :audio], silence[:, :audio])


def test_the_silent_window_under_bfloat16_autocast_is_not_reused_without_it():
    """Pipeline(cpu_bf16=True) runs whisper under autocast: the silent window computed there must not stand in for
    the float32 one (the same model, a float32 pipeline later)."""
    features = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(3))
    speech = build_tiny(seed=0)[0]
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            speech.embed_audio(features, seconds=2.0)
        after_autocast = speech.embed_audio(features, seconds=2.0)
        fresh = build_tiny(seed=0)[0].embed_audio(features, seconds=2.0)
    assert torch.equal(after_autocast, fresh)


def test_pipeline_trims_the_encoder_to_the_longest_window_of_a_batch(tiny):
    speech, tokenizer, extractor = tiny
    seen = []
    hook = speech.whisper.layers[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    try:
        for trim in (False, True):
            pipe = Pipeline(speech, tokenizer, extractor, name="tiny", device="cpu", trim_encoder=trim)
            assert ("trim_encoder=True" in repr(pipe)) is trim
            pipe.transcribe(speechlike(2.0), steps=1, seed=0, record_steps=False)
    finally:
        hook.remove()
    assert seen[0] == 1500  # without trimming: the whole window
    assert 1500 > seen[-1] >= 2 * M.WHISPER_FRAME_RATE  # trimmed: the window's audio (its span) plus the margin


@pytest.mark.skipif(not (asr.loading.MINI_DIR / "speech.json").is_file(), reason="asr/mini/model is not shipped")
def test_mini_reads_as_well_from_a_trimmed_encoder(monkeypatch):
    """The trimmed encoder is an approximation (the audio no longer attends to the padding): on real weights the CTC
    head must read the examples about as well as from the whole window, within a word or two of their 47 words
    (train/results/cpu-x4 section 6 measures it on 195 clips)."""
    from asr.evaluate import error_rates, make_normalizer, read_manifest

    pipe = asr.load("mini", device="cpu")
    assert pipe.trim_encoder
    utterances = read_manifest(Path(__file__).resolve().parents[1] / "examples" / "manifest.tsv")
    references = [u.text for u in utterances]
    trimmed = [pipe.transcribe_ctc(str(u.audio)).text for u in utterances]
    monkeypatch.setattr(pipe, "trim_encoder", False)
    full = [pipe.transcribe_ctc(str(u.audio)).text for u in utterances]
    normalize = make_normalizer()
    trimmed_wer, full_wer = (error_rates(references, h, normalize).wer for h in (trimmed, full))
    assert trimmed_wer <= full_wer + 5.0, (trimmed, full)
    assert trimmed_wer < 80.0  # it reads: random weights score ~100 %
