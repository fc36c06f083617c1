"""The adapter checkpoint (diffusion_asr_small.pt): save, load back through asr.load, and readable errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import speechlike

import asr
from asr import model as M
from asr.loading import AdapterError, adapter_projector, build_tiny, read_adapter, save_adapter
from asr.pipeline import Pipeline


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny stack with a random (non-zero) LoRA on every attention projection, saved as a real checkpoint."""
    speech, tokenizer, features = build_tiny(seed=0)
    targets = M.attention_lora_targets(speech.backbone)
    M.inject_lora(speech.backbone, {t: 4 for t in targets})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in speech.backbone.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for p in speech.projector.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    folder = tmp_path_factory.mktemp("adapter")
    save_adapter(speech, folder / "diffusion_asr_small.pt")
    return Pipeline(speech.eval(), tokenizer, features, name="in-memory", device="cpu"), folder, targets


def test_round_trip_gives_identical_output(trained):
    original, folder, targets = trained
    loaded = asr.load(str(folder), device="cpu", backbone="tiny-random")
    audio = speechlike(4.0, seed=1)
    a = original.transcribe(audio, steps=6, seed=11)
    b = loaded.transcribe(audio, steps=6, seed=11)
    assert a.segments[0].tokens == b.segments[0].tokens
    assert np.array_equal(a.segments[0].steps.argmax, b.segments[0].steps.argmax)
    lora = [n for n, _ in loaded.model.backbone.named_modules() if n.endswith("lora_A")]
    assert len(lora) == len(targets)
    # the adapter changes the model: the plain tiny stack answers differently
    plain = asr.load("tiny-random", device="cpu").transcribe(audio, steps=6, seed=11)
    assert not np.array_equal(plain.segments[0].steps.argmax, b.segments[0].steps.argmax)


def test_peft_key_formats_are_accepted(trained, tmp_path):
    _, folder, _ = trained
    ckpt = read_adapter(folder / "diffusion_asr_small.pt")
    ckpt["lora"] = {f"base_model.model.{k.replace('.weight', '.default.weight')}": v for k, v in ckpt["lora"].items()}
    torch.save(ckpt, tmp_path / "diffusion_asr_small.pt")
    loaded = asr.load(str(tmp_path / "diffusion_asr_small.pt"), device="cpu", backbone="tiny-random")
    reference = asr.load(str(folder), device="cpu", backbone="tiny-random")
    audio = speechlike(2.0, seed=2)
    assert loaded.transcribe(audio, steps=3, seed=1).text == reference.transcribe(audio, steps=3, seed=1).text


def _broken(folder, tmp_path, edit):
    ckpt = read_adapter(folder / "diffusion_asr_small.pt")
    edit(ckpt)
    path = tmp_path / "diffusion_asr_small.pt"
    torch.save(ckpt, path)
    with pytest.raises(AdapterError) as info:
        asr.load(str(path), device="cpu", backbone="tiny-random")
    return str(info.value)


def test_wrong_lora_key_is_named(trained, tmp_path):
    def rename(ckpt):
        key = next(k for k in sorted(ckpt["lora"]) if ".lora_B." in k)
        ckpt["lora"][key.replace("lora_B", "lora_Z")] = ckpt["lora"].pop(key)

    message = _broken(trained[1], tmp_path, rename)
    assert "missing keys (1)" in message and "unexpected keys (1)" in message and "lora_Z" in message


def test_wrong_lora_shape_is_named(trained, tmp_path):
    def reshape(ckpt):
        key = next(k for k in sorted(ckpt["lora"]) if k.endswith("lora_B.weight"))
        ckpt["lora"][key] = torch.zeros(ckpt["lora"][key].shape[0] + 1, ckpt["lora"][key].shape[1])

    assert "shape of" in _broken(trained[1], tmp_path, reshape)


def test_lora_on_missing_module_is_named(trained, tmp_path):
    def stray(ckpt):
        ckpt["lora"]["model.decoder.layers.99.self_attn.q_proj.lora_A.weight"] = torch.zeros(4, 64)

    assert "layers.99" in _broken(trained[1], tmp_path, stray)


def test_projector_mismatch_is_named(trained, tmp_path):
    def widen(ckpt):
        last = list(ckpt["projector"])[-2]  # the last linear's weight
        ckpt["projector"][last] = torch.zeros(65, ckpt["projector"][last].shape[1])
        ckpt["projector"][list(ckpt["projector"])[-1]] = torch.zeros(65)

    assert "65" in _broken(trained[1], tmp_path, widen)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "diffusion_asr_small.pt").write_bytes(b"not a torch file")
    with pytest.raises(AdapterError, match="not a readable adapter"):
        asr.load(str(tmp_path), device="cpu", backbone="tiny-random")
    torch.save({"weights": {}}, tmp_path / "x.pt")
    with pytest.raises(AdapterError, match="'projector' and 'lora'"):
        asr.load(str(tmp_path / "x.pt"), device="cpu", backbone="tiny-random")


def test_unknown_model_name_is_explained(tmp_path):
    with pytest.raises(asr.ModelLoadError, match="neither a local file/folder nor a hub id"):
        asr.load("no-such-model", device="cpu")
    with pytest.raises(asr.ModelLoadError, match="holds no diffusion_asr_small.pt"):
        asr.load(str(tmp_path), device="cpu")


def test_projector_layout_from_foreign_names():
    """Key names are unknown in advance: the layout comes from shapes, in the checkpoint's layer order."""
    reference = M.Projector(M.default_projector_layout(32, 48, 64))
    renamed = {
        f"subsample.conv{i}.{leaf}" if i < 3 else f"out.fc{i - 3}.{leaf}": v
        for (key, v) in reference.state_dict().items()
        for i, leaf in [(int(key.split(".")[1]), key.split(".")[2])]
    }
    layout = M.Projector.layout_from_state_dict(renamed)
    assert [s.kind for s in layout] == ["conv", "conv", "conv", "linear", "linear"]
    assert [s.stride for s in layout[:3]] == [2, 2, 2]
    rebuilt = M.Projector(layout)
    rebuilt.load_state_dict(M.Projector.canonical_keys(renamed))
    x = torch.randn(1, 1500, 32)
    assert torch.equal(rebuilt(x), reference(x))


def test_projector_with_attention_round_trips_and_rejects_a_bad_block():
    layout = [*M.default_projector_layout(32, 48, 64), M.attention_spec(64)]
    torch.manual_seed(0)
    reference = M.Projector(layout)
    for p in reference.parameters():  # a trained block: not the identity it starts as
        torch.nn.init.normal_(p, std=0.1)
    state = reference.state_dict()
    assert any(".attn." in key for key in state) and M.Projector.canonical_keys(state).keys() == state.keys()
    rebuilt = adapter_projector({"projector": state}, layout)
    x = torch.randn(1, 1500, 32)
    assert torch.equal(rebuilt(x), reference(x))
    with pytest.raises(M.ProjectorLayoutError, match="in_dim == out_dim"):
        M.Projector([*layout[:-1], M.LayerSpec("attention", 64, 32, heads=2, ffn=8)])


def test_int8_weights_read_back_within_half_a_step(tmp_path):
    """quantize_int8 + read_weights: each matrix comes back as float32 within half an int8 step of its row's largest
    magnitude (rows along the last dimension; a convolution's [out, in, 3] by output channel), a zero row as zeros;
    vectors, small and integer tensors are stored as they were; the file is about half of float16's."""
    from safetensors.torch import save_file

    from asr.loading import INT8_SCALE, quantize_int8, read_weights

    gen = torch.Generator().manual_seed(0)
    tensors = {
        "linear": torch.randn(300, 128, generator=gen).half(),
        "experts": (torch.randn(4, 64, 128, generator=gen) * torch.logspace(-3, 0, 64)[:, None]).half(),
        "conv": torch.randn(64, 32, 3, generator=gen).half(),
        "bias": torch.randn(300, generator=gen).half(),
        "small": torch.randn(4, 256, generator=gen).half(),
        "ids": torch.arange(10_000).reshape(100, 100),
    }
    tensors["linear"][7] = 0
    save_file(tensors, tmp_path / "plain.safetensors")
    save_file(quantize_int8(tensors), tmp_path / "int8.safetensors")
    back = read_weights(tmp_path / "int8.safetensors")
    assert set(back) == set(tensors) and not any(k.endswith(INT8_SCALE) for k in back)
    for name, rows in (("linear", (-1,)), ("experts", (-1,)), ("conv", (1, 2))):
        want = tensors[name].float()
        step = want.abs().amax(dim=rows, keepdim=True) / 127
        assert back[name].dtype == torch.float32 and back[name].shape == want.shape
        assert ((back[name] - want).abs() <= step * 0.5 * 1.001 + 1e-8).all(), name
    assert (back["linear"][7] == 0).all()
    for name in ("bias", "small", "ids"):
        assert back[name].dtype == tensors[name].dtype and torch.equal(back[name], tensors[name])
    plain, int8 = ((tmp_path / f"{n}.safetensors").stat().st_size for n in ("plain", "int8"))
    quantized = sum(tensors[n].numel() for n in ("linear", "experts", "conv"))
    assert int8 < plain - 0.95 * quantized  # one byte saved per quantized weight, less the scales
