"""asr.kernels: the fused Triton MoE experts, run on the CPU in Triton's interpreter against transformers' own
experts (the real DiffusionGemma classes). The interpreter does not compute in bfloat16, so the kernels run in
float16 (and float32) here; the GPU run of the benchmark checks them in bfloat16 (``check-fused-moe``)."""

import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "conftest.py turns Triton's interpreter on"
triton = pytest.importorskip("triton")

from transformers import DiffusionGemmaForBlockDiffusion  # noqa: E402
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextExperts  # noqa: E402

from asr import kernels as K  # noqa: E402
from asr.model import tiny_backbone_config  # noqa: E402


def experts_module(experts=8, top_k=3, hidden=80, inter=48, activation="gelu_pytorch_tanh", seed=0):
    """transformers' experts (eager loop) with weights that float16 holds exactly."""
    cfg = tiny_backbone_config().text_config
    cfg.num_experts, cfg.top_k_experts, cfg.hidden_size, cfg.moe_intermediate_size = experts, top_k, hidden, inter
    cfg.hidden_activation = activation
    cfg._experts_implementation = "eager"
    module = DiffusionGemmaTextExperts(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (module.gate_up_proj, module.down_proj):
            p.copy_((torch.randn(p.shape, generator=gen) * 0.1).half().float())
    return module


def routing(tokens, experts, top_k, seed=0, crowd=0):
    """Random distinct experts per token; the first ``crowd`` tokens all go to experts 0..top_k-1 (more rows than
    one block), and expert ``experts - 1`` gets none."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(experts - 1, generator=gen)[:top_k] for _ in range(tokens)])
    idx[:crowd] = torch.arange(top_k)
    weights = torch.rand(tokens, top_k, generator=gen)
    return idx, weights


def test_route_covers_every_pair_once_in_blocks_of_one_expert():
    idx, _ = routing(tokens=37, experts=8, top_k=3, crowd=20)
    for block_m in (16, 32):
        r = K.route(idx, 8, block_m)
        flat = idx.reshape(-1)
        blocks = triton.cdiv(flat.numel(), block_m) + 8
        assert r.block_expert.shape == (blocks,)  # a fixed size, whatever the routing (CUDA-graph safe)
        seen = []
        for b in range(blocks):
            e = int(r.block_expert[b])
            if e < 0:
                continue
            rows = range(int(r.block_start[b]), min(int(r.block_start[b]) + block_m, int(r.block_end[b])))
            assert len(rows) > 0
            pairs = [int(r.pair[i]) for i in rows]
            assert all(int(flat[p]) == e for p in pairs), "a block holds rows of another expert"
            seen += pairs
        assert sorted(seen) == list(range(flat.numel())), "every (token, expert) pair in exactly one block"
        needed = sum(triton.cdiv(int((flat == e).sum()), block_m) for e in range(8))
        assert int((r.block_expert >= 0).sum()) == needed


@pytest.mark.parametrize("activation", ["gelu_pytorch_tanh", "silu"])
@pytest.mark.parametrize("blocks", [K.Blocks(16, 16, 32), K.Blocks(32, 32, 64)])
def test_fused_experts_match_transformers_experts(activation, blocks):
    module = experts_module(activation=activation)
    x = (torch.randn(37, 80, generator=torch.Generator().manual_seed(1))).half().float()
    idx, weights = routing(tokens=37, experts=8, top_k=3, crowd=20)
    with torch.no_grad():
        ref = module(x, idx, weights)
        got = K.fused_experts(
            x.half(), idx, weights, module.gate_up_proj.half(), module.down_proj.half(), activation, blocks
        )
    assert got.dtype == torch.float16 and got.shape == ref.shape
    # float16 intermediate activations: ~1e-3 of outputs of size ~2
    assert torch.allclose(got.float(), ref, atol=5e-3, rtol=5e-3), (got.float() - ref).abs().max()
    # and not trivially: another routing weight gives another answer
    other = K.fused_experts(x.half(), idx, weights.flip(-1), module.gate_up_proj.half(), module.down_proj.half(),
                            activation, blocks)  # fmt: skip
    assert not torch.allclose(other.float(), ref, atol=5e-3, rtol=5e-3)


def test_supports_only_the_layout_of_the_kernels():
    module = experts_module()
    assert K.supports(module)
    module.config.hidden_activation = "relu"
    assert not K.supports(module)


def test_use_fused_experts_in_the_real_backbone_class(monkeypatch):
    """The registered implementation inside DiffusionGemmaForBlockDiffusion gives transformers' eager output."""
    calls = []
    fused = K.fused_experts
    monkeypatch.setattr(K, "fused_experts", lambda *a, **k: calls.append(1) or fused(*a, **k))
    torch.manual_seed(0)
    bb = DiffusionGemmaForBlockDiffusion(tiny_backbone_config()).eval()
    bb.set_experts_implementation("eager")
    ids = torch.randint(3, 500, (2, 12))
    with torch.no_grad():
        ref = bb.model.encoder(input_ids=ids).last_hidden_state
        assert K.use_fused_experts(bb) == K.NAME
        assert bb.config.text_config._experts_implementation == K.NAME
        got = bb.model.encoder(input_ids=ids).last_hidden_state
        assert len(calls) == bb.config.text_config.num_hidden_layers  # every layer's experts ran the kernels
        K.use_fused_experts(bb, on=False)
        assert bb.config.text_config._experts_implementation != K.NAME
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), (got - ref).abs().max()


def test_bench_fused_cases_on_the_tiny_stack():
    """The GPU benchmark's cases for the kernels run (here in the interpreter), pass their agreement check and leave
    transformers' experts and norms in place."""
    from asr import bench as B

    stack = B.build_stack("tiny", "cpu", canvas_length=32)  # the interpreter runs each program in Python: keep it short
    settings = B.Settings(repeats=1, multi_repeats=1, warmup=0, budget_s=None, static_compile_s=0.0, check=True,
                          quick=True)  # fmt: skip
    bench = B.Bench(stack, settings, None)
    assert stack.info["kernels"] == "transformers"  # the CPU default (asr.loading.use_kernels)
    bench._moe_layer_at(1, [(16, 32, 64, 4, 3)])
    bench.variant(norms=True, experts=True)
    bench.profile_batch(segments=1)
    records = {r["case"]: r for r in bench.records}
    assert records["moe-layer-32tok-fused-16x32x64x4x3"]["ok"]
    assert records["moe-layer-32tok-grouped_mm"]["seconds"] > 0
    check = records["check-fused"]
    assert check["ok"] and check["first_step_argmax_agree"] >= 0.99 and check["eager_experts_agree"] >= 0.99
    assert check["blocks"] == "16,32,64,4,3"  # the sweep's best tile reaches the pipeline cases
    for case in ("decoder-step-fused", "1x30s-8steps-fused", "1x30s-8steps-cudagraph-fused"):  # kernels: records
        assert records[case]["kernels"] == "fused" and records[case]["seconds"] > 0
    assert records["profile-1x"]["seconds"] > 0
    bb = stack.model.backbone
    assert bb.config.text_config._experts_implementation != K.NAME
    assert all("forward" not in m.__dict__ for m in bb.modules())


@pytest.mark.parametrize("shape, with_scale", [((2, 5, 80), True), ((3, 7, 4, 48), True), ((6, 48), False)])
def test_rms_norm_matches_transformers_rms_norm(shape, with_scale):
    """rms_norm against DiffusionGemmaRMSNorm itself: a width that is no power of two, 2-4-D inputs, with and
    without a weight, float16 in and out (the interpreter cannot do bfloat16) and float32."""
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaRMSNorm

    gen = torch.Generator().manual_seed(len(shape))
    norm = DiffusionGemmaRMSNorm(shape[-1], eps=1e-6, with_scale=with_scale)
    if with_scale:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(shape[-1], generator=gen))
    x = torch.randn(shape, generator=gen) * 3
    with torch.no_grad():
        for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
            ref = norm(x.to(dtype))
            got = K.rms_norm(x.to(dtype), norm.weight if with_scale else None, norm.eps)
            assert got.dtype == dtype and got.shape == x.shape
            assert torch.allclose(got.float(), ref.float(), atol=tol, rtol=tol), (got.float() - ref.float()).abs().max()
    strided = x.transpose(0, -2) if x.dim() > 2 else x[:, ::2]  # a view whose rows are not contiguous
    with torch.no_grad():
        assert torch.allclose(K.rms_norm(strided, norm.weight if with_scale else None, 1e-6), norm(strided), atol=1e-5)


def test_use_fused_norms_in_the_real_backbone_class():
    """Every RMSNorm of the real class runs the kernel (a decoder pass gives transformers' logits), switching back
    restores the modules' own forward, and with gradients on the norms fall back to transformers (no backward)."""
    torch.manual_seed(0)
    from asr.model import tiny_backbone_config

    bb = DiffusionGemmaForBlockDiffusion(tiny_backbone_config()).eval()
    ids = torch.randint(3, 500, (2, 12))
    calls = []
    real = K.rms_norm
    with torch.no_grad():
        ref = bb.model.encoder(input_ids=ids).last_hidden_state
        switched = K.use_fused_norms(bb)
        K.rms_norm = lambda *a: calls.append(1) or real(*a)
        try:
            got = bb.model.encoder(input_ids=ids).last_hidden_state
        finally:
            K.rms_norm = real
    assert switched >= 11 * bb.config.text_config.num_hidden_layers and calls
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), (got - ref).abs().max()
    out = bb.model.encoder(input_ids=ids).last_hidden_state  # gradients on: transformers' forward, differentiable
    out.sum().backward()
    assert any(p.grad is not None for n, p in bb.named_parameters() if "layernorm" in n)
    assert K.use_fused_norms(bb, on=False) == switched
    assert all("forward" not in m.__dict__ for m in bb.modules())


def test_use_kernels_default_and_switch_off(monkeypatch):
    """asr.load's choice: the kernels on CUDA unless ASR_KERNELS=off, never on the CPU. (The device string is only
    read: the tiny model stays on the CPU, where the interpreter runs the kernels.)"""
    from asr.loading import use_kernels

    bb = DiffusionGemmaForBlockDiffusion(tiny_backbone_config()).eval()
    assert use_kernels(bb, "cpu") == "transformers"
    assert bb.config.text_config._experts_implementation != K.NAME
    monkeypatch.setenv("ASR_KERNELS", "off")
    assert use_kernels(bb, "cuda") == "transformers"
    assert all("forward" not in m.__dict__ for m in bb.modules())
    monkeypatch.delenv("ASR_KERNELS")
    assert use_kernels(bb, "cuda") == "fused"
    assert bb.config.text_config._experts_implementation == K.NAME
    assert any("forward" in m.__dict__ for m in bb.modules())
    assert K.use_fused(bb, norms=False, experts=False) == "transformers"


def test_with_gradients_on_the_kernels_step_aside():
    """The kernels have no backward: with gradients on, a switched model runs transformers' code, so training
    through it still reaches every expert and norm weight, with transformers' gradients."""
    torch.manual_seed(0)
    bb = DiffusionGemmaForBlockDiffusion(tiny_backbone_config())
    ids = torch.randint(3, 500, (2, 12))
    bb.model.encoder(input_ids=ids).last_hidden_state.square().sum().backward()
    ref = {n: p.grad.clone() for n, p in bb.named_parameters() if p.grad is not None}
    bb.zero_grad()
    K.use_fused(bb)
    bb.model.encoder(input_ids=ids).last_hidden_state.square().sum().backward()
    got = {n: p.grad for n, p in bb.named_parameters() if p.grad is not None}
    K.use_fused(bb, norms=False, experts=False)
    assert got.keys() == ref.keys() and any("experts" in n for n in got) and any("layernorm" in n for n in got)
    assert all(torch.allclose(got[n], ref[n], atol=1e-5, rtol=1e-4) for n in ref)


def test_a_failing_kernel_falls_back_to_transformers_once(monkeypatch):
    """A kernel that cannot run (here: raises) gives transformers' result with one warning, and is not tried again."""
    torch.manual_seed(0)
    bb = DiffusionGemmaForBlockDiffusion(tiny_backbone_config()).eval()
    ids = torch.randint(3, 500, (2, 12))
    monkeypatch.setattr(K, "FAILED", {})
    tries = []

    def broken(*args, **kwargs):
        tries.append(1)
        raise RuntimeError("no GPU compiler here")

    with torch.no_grad():
        ref = bb.model.encoder(input_ids=ids).last_hidden_state
        K.use_fused(bb)
        monkeypatch.setattr(K, "fused_experts", broken)
        monkeypatch.setattr(K, "rms_norm", broken)
        with pytest.warns(RuntimeWarning, match="fused (experts|norms) kernel failed") as warned:
            got = bb.model.encoder(input_ids=ids).last_hidden_state
        again = bb.model.encoder(input_ids=ids).last_hidden_state
        K.use_fused(bb, norms=False, experts=False)
    assert set(K.FAILED) == {"experts", "norms"} and len(tries) == 2 and len(warned) == 2  # one per kernel family
    assert torch.equal(got, ref) and torch.equal(again, ref)


# --- the sampling kernel ---------------------------------------------------------------------------------------------


def raw_logits(batch, length, vocab, dtype, seed=0):
    """Logits as an lm_head gives them: mostly small, a few large ones per position (a peaked distribution)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, vocab, generator=gen) * 3
    peaks = torch.randint(0, vocab, (batch, length, 1), generator=gen)
    x.scatter_(-1, peaks, 40.0 * (torch.arange(length) % 2 == 0).float()[None, :, None].expand(batch, -1, -1))
    return x.to(dtype)


@pytest.mark.parametrize(("dtype", "vocab", "softcap"), [(torch.float16, 3000, 30.0), (torch.float32, 1024, None)])
def test_sample_logits_equals_the_eager_draw(dtype, vocab, softcap):
    """Given the same exponential draws, the kernel samples exactly the eager draw's tokens (sample(), what
    generate() draws), the same argmax, the Categorical entropy and the probabilities softmax(scaled.to(dtype))."""
    from asr.decoding import draw_torch

    logits = raw_logits(2, 5, vocab, dtype)
    ref_probs = torch.empty_like(logits)
    ref = draw_torch(logits, 0.7, softcap, ref_probs, torch.Generator().manual_seed(5))
    q = torch.empty(logits.shape).exponential_(generator=torch.Generator().manual_seed(5))  # what sample() drew
    buf = logits.clone()  # the probabilities overwrite the logits in place
    got = K.sample_logits(buf, 0.7, softcap, buf, q=q)
    assert torch.equal(got.sampled, ref.sampled)
    assert torch.equal(got.argmax, ref.argmax)
    torch.testing.assert_close(got.entropy, ref.entropy, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got.confidence, ref.confidence, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(buf, ref_probs, atol=2e-6, rtol=1e-3)
    assert ref.entropy.min() < 0.1 < ref.entropy.max()  # both peaked and flat positions were checked


def test_sample_logits_draws_from_softmax_with_its_own_generator():
    """Without given draws (the GPU path), the samples follow softmax(scaled): the frequencies of 128 positions with
    the same logits match the probabilities; a seed gives the same draws again, another seed others. (Few
    positions: Triton's interpreter runs a program per position in Python.)"""
    row = torch.tensor([1.0, 0.5, 0.0, -0.5])
    p = torch.softmax(row, dim=-1)

    def draw(seed, n):
        buf = row.expand(1, n, 4).contiguous()
        return K.sample_logits(buf, 1.0, None, buf, seed=torch.tensor([seed])).sampled[0]

    a = draw(1, 128)
    assert torch.equal(draw(1, 16), a[:16])
    assert not torch.equal(draw(2, 16), a[:16])
    freq = torch.bincount(a, minlength=4).float() / len(a)
    chi2 = float(((freq - p) ** 2 / p).sum() * len(a))
    assert chi2 < 16.3, (freq, p)  # the 99.9 % quantile of chi-square with 3 degrees of freedom
