"""The real-size architecture (DiffusionGemma-26B-A4B + whisper-small) checked on the meta device: no weights."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from asr import model as M


@pytest.fixture(scope="module")
def real():
    config = M.real_backbone_config(canvas_length=192)
    with torch.device("meta"):
        backbone = DiffusionGemmaForBlockDiffusion(config)
        whisper = WhisperEncoder(M.whisper_small_config())
        projector = M.Projector(M.default_projector_layout(768, 1280, config.text_config.hidden_size))
    return backbone, whisper, projector


def test_backbone_size(real):
    backbone, _, _ = real
    text_params = sum(p.numel() for n, p in backbone.named_parameters() if "vision" not in n)
    # the notes: 25.8 B parameters in all (the vision tower here is the smaller default one)
    assert 25.0e9 < text_params < 26.0e9
    assert backbone.config.text_config.hidden_size == 2816


def test_30_seconds_give_188_slots_of_backbone_width(real):
    backbone, whisper, projector = real
    features = torch.empty(1, 80, 3000, device="meta")  # 30 s of log-mel frames
    frames = whisper(features).last_hidden_state
    assert frames.shape == (1, 1500, 768)
    embeds = projector(frames)
    assert embeds.shape == (1, math.ceil(1500 / 8), backbone.config.text_config.hidden_size) == (1, 188, 2816)
    assert projector.num_slots(1500) == 188
    assert 15e6 < sum(p.numel() for p in projector.parameters()) < 25e6  # "about 19 M"


def test_speech_model_assembles_and_prompt_ids_fit(real):
    backbone, whisper, projector = real
    prompt = M.PromptFormat(prefix=[2, 105, 2364, 107], suffix=[106, 107, 105, 4368, 107], eos_ids=[1, 106, 50])
    speech = M.SpeechModel(whisper, projector, backbone, prompt)
    assert speech.num_slots == 188
    ids = prompt.ids(speech.num_slots)
    vocab = backbone.config.text_config.vocab_size
    assert all(0 <= i < vocab for i in ids)
    assert ids.count(M.AUDIO_TOKEN_ID) == 188
    assert {M.AUDIO_START_ID, M.AUDIO_TOKEN_ID, M.AUDIO_END_ID} < set(range(vocab))
    # audio placeholders must not collide with the backbone's own image tokens
    assert M.AUDIO_TOKEN_ID not in (backbone.config.image_token_id, backbone.config.boi_token_id)
    with torch.device("meta"):
        embeds = speech.prompt_embeddings(torch.empty(2, 188, 2816))
    assert embeds.shape == (2, len(ids), 2816)


def test_every_lora_target_exists(real):
    backbone, _, _ = real
    targets = M.attention_lora_targets(backbone)
    modules = dict(backbone.named_modules())
    layer_types = backbone.config.text_config.layer_types
    full = sum(t == "full_attention" for t in layer_types)
    assert full == 5 and len(layer_types) == 30
    # q,k,v,o in sliding layers; no v_proj in full-attention layers (K = V); encoder and decoder each
    assert len(targets) == 2 * (4 * (30 - full) + 3 * full)
    assert all(isinstance(modules[t], torch.nn.Linear) for t in targets)
    assert any(t.startswith("model.encoder.language_model.layers.0.") for t in targets)
    assert any(t.startswith("model.decoder.layers.29.") for t in targets)
    M.inject_lora(backbone, {t: 16 for t in targets})  # peft accepts every target of the real architecture
    lora_a = [n for n, m in backbone.named_modules() if n.endswith("lora_A.default")]
    assert len(lora_a) == len(targets)
