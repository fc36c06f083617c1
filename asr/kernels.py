"""The backbone's RMSNorms and MoE experts, and the sampling between denoising steps (:func:`sample_logits`), as
Triton kernels, for the GPU path (``asr.load`` switches them on for CUDA; ``ASR_KERNELS=off`` keeps transformers' own
and the reference loop).

Why: a decoder step over a 192-token canvas routes 192 x 8 (token, expert) pairs, ~12 rows for each of the 128
experts, so every layer reads all its expert weights (1.52 GB; ~46 GB of a step's ~52 GB) to multiply a dozen rows,
and transformers' ``grouped_mm`` experts read them at ~2.8 TB/s on an H200; and each of a layer's 11 RMSNorms is ~9
eager elementwise kernels, about a third of a step's ~5000 kernels. Measured on an H200 (bench/README.md,
2026-11-28): the experts kernels read at ~4.0 TB/s, a step's GPU time fell from 33.6 to 21.7 ms, and one 30 s window
at 8 steps from 0.360 to 0.250 s on the graphed path.

Experts (the layout of vLLM's ``fused_moe``, written here from scratch in plain PyTorch + Triton):

1. :func:`route` sorts the pairs by expert and cuts each expert's rows into blocks of ``block_m`` rows. Everything
   has a fixed size (at most ``ceil(pairs / block_m) + experts`` blocks; unused blocks are marked -1), so the step
   stays capturable as a CUDA graph: no host synchronisation, no data-dependent shapes.
2. ``_gate_up_kernel``: one program per (block, ``block_n`` columns of the intermediate size) gathers its rows of
   ``hidden_states``, multiplies them by the expert's gate and up tiles in one pass over the hidden size, and writes
   ``act(gate) * up`` (the activation fused, no ``(pairs, 2 x intermediate)`` tensor).
3. ``_down_kernel``: the down projection of those rows, scaled by the routing weight, written to the pair's own row.
4. The ``top_k`` rows of each token are summed in float32 (deterministic, no atomics), as transformers does.

RMSNorm: :func:`rms_norm`, one program per row (or per several short rows), in float32 as transformers computes it.

Results equal transformers' up to float rounding (the gate/up products and the activation stay in float32 here; the
norms reduce in another order), so the pipeline's tokens may differ from transformers' path for the same seed; the
benchmark's ``check-fused`` compares the first step's argmax canvas with transformers' path, against the same
agreement between transformers' own ``eager`` and ``grouped_mm`` experts. A kernel that fails to compile or launch
turns itself off for the process with one warning (:data:`FAILED`); the call then runs transformers' code.

Importing this module needs ``triton`` (bundled with CUDA builds of torch). Tests run the kernels on the CPU in
Triton's interpreter (``TRITON_INTERPRET=1``, set before the import), in float16: the interpreter does not compute
in bfloat16.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from . import decoding, fast

NAME = "asr_fused"  # the name registered in transformers' ExpertsInterface
ACTIVATIONS = {"gelu_pytorch_tanh": 0, "gelu_new": 0, "silu": 1}  # config.hidden_activation -> kernel code
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests)
T = TypeVar("T")
FAILED: dict[str, str] = {}  # kernel family ("experts", "norms", "sampling") -> the error that turned it off


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether a call must be differentiable: the kernels have no backward, so then transformers' code runs."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def guarded(family: str, fused: Callable[[], T], fallback: Callable[[], T]) -> T:
    """``fused()``, or the eager ``fallback()`` (transformers' code; for sampling, ``asr.decoding.draw_torch``) from
    the first time a kernel of ``family`` fails (Triton cannot compile or launch on this machine, say) on: one
    warning, and the request and the later ones still run."""
    if family not in FAILED:
        try:
            return fused()
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any compile/launch failure; the fallback is exact
            FAILED[family] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            warnings.warn(
                f"asr.kernels: the fused {family} kernel failed ({FAILED[family]}); using the eager "
                "implementation from now on", RuntimeWarning, stacklevel=3,
            )  # fmt: skip
    return fallback()


@dataclass(frozen=True)
class Blocks:
    """Tile sizes and launch settings of both kernels."""

    block_m: int = 16  # rows (token, expert pairs) per program; >= 16 for tl.dot
    block_n: int = 64
    block_k: int = 128
    num_warps: int = 4
    num_stages: int = 3

    @classmethod
    def parse(cls, text: str) -> Blocks:
        """``"16,64,128,4,3"`` (block_m, block_n, block_k, num_warps, num_stages), as in ``ASR_MOE_BLOCKS``."""
        return cls(*(int(x) for x in text.split(",")))


def default_blocks(pairs: int, experts: int) -> Blocks:
    """Tiles for ``pairs`` routed rows over ``experts``: blocks of 32 rows while an expert's share is small (at
    ~12 rows per expert nearly every expert fits one block, so its weights are read once; the step is bound by
    those reads, not by the wasted rows), else 64 x 128 tiles with 8 warps. These were the fastest of the tiles the
    benchmark's ``moe-layer`` sweep tried on an H200 (bench/RESULTS.md, 2026-11-28) at batch 1 and at batch 16.
    ``ASR_MOE_BLOCKS`` overrides."""
    if os.environ.get("ASR_MOE_BLOCKS"):
        return Blocks.parse(os.environ["ASR_MOE_BLOCKS"])
    if pairs / max(1, experts) <= 24:
        return Blocks(block_m=32, block_n=64, block_k=128, num_warps=4, num_stages=3)
    return Blocks(block_m=64, block_n=128, block_k=64, num_warps=8, num_stages=4)


@dataclass
class Routing:
    """The (token, expert) pairs sorted by expert and cut into blocks (all int32 tensors on the device).

    ``pair``: for each sorted row, the pair's index ``token * top_k + j``; ``block_expert``: each block's expert (-1:
    unused block); ``block_start`` / ``block_end``: each block's first row and the end of its expert's rows."""

    pair: torch.Tensor
    block_expert: torch.Tensor
    block_start: torch.Tensor
    block_end: torch.Tensor


def route(top_k_index: torch.Tensor, num_experts: int, block_m: int) -> Routing:
    """Sort the pairs by expert and cut every expert's rows into blocks of ``block_m``, with fixed-size tensors."""
    flat = top_k_index.reshape(-1)
    pairs = flat.numel()
    experts_sorted, order = torch.sort(flat)
    counts = torch.zeros(num_experts, dtype=torch.int32, device=flat.device)
    counts.scatter_add_(0, experts_sorted, torch.ones_like(experts_sorted, dtype=torch.int32))
    blocks = (counts + block_m - 1) // block_m
    blocks_end = torch.cumsum(blocks, 0, dtype=torch.int32)  # one past each expert's last block
    rows_end = torch.cumsum(counts, 0, dtype=torch.int32)  # one past each expert's last sorted row
    max_blocks = triton.cdiv(pairs, block_m) + min(num_experts, pairs)
    block = torch.arange(max_blocks, device=flat.device, dtype=torch.int32)
    expert = torch.searchsorted(blocks_end, block, right=True).to(torch.int32)  # == num_experts past the last block
    valid = expert < num_experts
    e = expert.clamp(max=num_experts - 1).long()
    first_block = blocks_end[e] - blocks[e]
    start = rows_end[e] - counts[e] + (block - first_block) * block_m
    return Routing(
        pair=order.to(torch.int32),
        block_expert=torch.where(valid, expert, torch.full_like(expert, -1)),
        block_start=start.to(torch.int32),
        block_end=rows_end[e].to(torch.int32),
    )


@triton.jit
def _activation(x, ACT: tl.constexpr):
    if ACT == 0:  # GELU, tanh approximation: 0.5 x (1 + tanh(y)) = x * sigmoid(2 y)
        y = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        return x * tl.sigmoid(2.0 * y)
    else:  # SiLU
        return x * tl.sigmoid(x)


@triton.jit
def _block(pair_ptr, block_start_ptr, block_end_ptr, n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's rows (sorted pairs) and their pair indices, and its output columns, with their masks."""
    rows = tl.load(block_start_ptr + tl.program_id(0)) + tl.arange(0, BLOCK_M)
    row_ok = rows < tl.load(block_end_ptr + tl.program_id(0))
    pair = tl.load(pair_ptr + rows, mask=row_ok, other=0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    return rows, row_ok, pair, cols, cols < n


@triton.jit
def _gate_up_kernel(
    x_ptr, w_ptr, h_ptr, pair_ptr, block_expert_ptr, block_start_ptr, block_end_ptr,
    hidden, inter, stride_x, stride_we, stride_wn, stride_h,
    TOP_K: tl.constexpr, ACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """h[row, n] = act(x[token] . w[e, n]) * (x[token] . w[e, inter + n]) for the rows of one block."""
    expert = tl.load(block_expert_ptr + tl.program_id(0))
    if expert < 0:  # a block past the last expert's rows
        return
    rows, row_ok, pair, cols, col_ok = _block(pair_ptr, block_start_ptr, block_end_ptr, inter, BLOCK_M, BLOCK_N)
    token = pair // TOP_K
    ks = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + token.to(tl.int64)[:, None] * stride_x + ks[None, :]
    g_ptrs = w_ptr + expert.to(tl.int64) * stride_we + cols.to(tl.int64)[:, None] * stride_wn + ks[None, :]
    u_ptrs = g_ptrs + inter * stride_wn
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, hidden, BLOCK_K):
        k_ok = (ks + k0 < hidden)[None, :]
        a = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok, other=0.0)
        acc_g = tl.dot(a, tl.trans(tl.load(g_ptrs, mask=col_ok[:, None] & k_ok, other=0.0)), acc_g)
        acc_u = tl.dot(a, tl.trans(tl.load(u_ptrs, mask=col_ok[:, None] & k_ok, other=0.0)), acc_u)
        x_ptrs += BLOCK_K
        g_ptrs += BLOCK_K
        u_ptrs += BLOCK_K
    h = _activation(acc_g, ACT) * acc_u
    h_ptrs = h_ptr + rows.to(tl.int64)[:, None] * stride_h + cols[None, :]
    tl.store(h_ptrs, h.to(h_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _down_kernel(
    h_ptr, w_ptr, out_ptr, weight_ptr, pair_ptr, block_expert_ptr, block_start_ptr, block_end_ptr,
    inter, hidden, stride_h, stride_we, stride_wn, stride_out,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """out[pair, n] = routing_weight[pair] * (h[row] . w[e, n]) for the rows of one block (float32 out)."""
    expert = tl.load(block_expert_ptr + tl.program_id(0))
    if expert < 0:
        return
    rows, row_ok, pair, cols, col_ok = _block(pair_ptr, block_start_ptr, block_end_ptr, hidden, BLOCK_M, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    h_ptrs = h_ptr + rows.to(tl.int64)[:, None] * stride_h + ks[None, :]
    w_ptrs = w_ptr + expert.to(tl.int64) * stride_we + cols.to(tl.int64)[:, None] * stride_wn + ks[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, inter, BLOCK_K):
        k_ok = (ks + k0 < inter)[None, :]
        a = tl.load(h_ptrs, mask=row_ok[:, None] & k_ok, other=0.0)
        acc = tl.dot(a, tl.trans(tl.load(w_ptrs, mask=col_ok[:, None] & k_ok, other=0.0)), acc)
        h_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    acc = acc * tl.load(weight_ptr + pair, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    out_ptrs = out_ptr + pair.to(tl.int64)[:, None] * stride_out + cols[None, :]
    tl.store(out_ptrs, acc, mask=row_ok[:, None] & col_ok[None, :])


def fused_experts(
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    activation: str = "gelu_pytorch_tanh",
    blocks: Blocks | None = None,
) -> torch.Tensor:
    """The MoE experts of ``(tokens, hidden)`` states: ``gate_up_proj`` is ``(experts, 2 * inter, hidden)`` (gate
    rows first), ``down_proj`` ``(experts, hidden, inter)``, as in transformers' concatenated, untransposed layout."""
    tokens, hidden = hidden_states.shape
    experts, two_inter, _ = gate_up_proj.shape
    inter = two_inter // 2
    top_k = top_k_index.shape[-1]
    pairs = tokens * top_k
    blocks = blocks or default_blocks(pairs, experts)
    x = hidden_states.contiguous()
    w1, w2 = gate_up_proj.contiguous(), down_proj.contiguous()
    r = route(top_k_index, experts, blocks.block_m)
    h = torch.empty(pairs, inter, device=x.device, dtype=x.dtype)
    out = torch.empty(pairs, hidden, device=x.device, dtype=torch.float32)
    weights = top_k_weights.reshape(-1).contiguous()
    n_blocks = r.block_expert.numel()
    launch = {"num_warps": blocks.num_warps, "num_stages": blocks.num_stages}
    bm, bn, bk = blocks.block_m, blocks.block_n, blocks.block_k
    _gate_up_kernel[(n_blocks, triton.cdiv(inter, bn))](
        x, w1, h, r.pair, r.block_expert, r.block_start, r.block_end,
        hidden, inter, x.stride(0), w1.stride(0), w1.stride(1), h.stride(0),
        TOP_K=top_k, ACT=ACTIVATIONS[activation], BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **launch,
    )  # fmt: skip
    _down_kernel[(n_blocks, triton.cdiv(hidden, bn))](
        h, w2, out, weights, r.pair, r.block_expert, r.block_start, r.block_end,
        inter, hidden, h.stride(0), w2.stride(0), w2.stride(1), out.stride(0),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **launch,
    )  # fmt: skip
    return out.view(tokens, top_k, hidden).sum(dim=1).to(hidden_states.dtype)


# --- RMSNorm -------------------------------------------------------------------------------------------------------
# A decoder layer has 11 RMSNorms (4 around attention and the MLP, q/k/v norms, 3 around the experts, the router's),
# each ~9 elementwise kernels in eager PyTorch (upcast, pow, mean, add, pow, mul, weight upcast, mul, downcast): about
# a third of a graphed decoder step's ~5000 kernels (bench/decoder-step profiles). One kernel per norm here.


@triton.jit
def _rms_norm_kernel(
    x_ptr, w_ptr, out_ptr, n_rows, n_cols, stride_x, stride_out, eps,
    HAS_WEIGHT: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """out[r] = x[r] / sqrt(mean(x[r]^2) + eps) (* w) for ``ROWS`` rows, in float32 as transformers' RMSNorm."""
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    mean_squared = tl.sum(x * x, axis=1) / n_cols + eps
    y = x * tl.rsqrt(mean_squared)[:, None]
    if HAS_WEIGHT:
        y = y * tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + rows[:, None] * stride_out + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension of ``x`` (any leading shape), with an optional ``weight``; output in ``x``'s
    dtype. Equals ``DiffusionGemmaRMSNorm`` up to float32 rounding (the sum of squares is reduced in another order).
    Each program normalises as many rows as fill a 4096-element tile (1 row of the hidden size, 16 of a head)."""
    shape, cols = x.shape, x.shape[-1]
    rows = x.reshape(-1, cols)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty(rows.shape, device=x.device, dtype=x.dtype)
    block = triton.next_power_of_2(cols)
    per_program = max(1, min(64, 4096 // block))
    _rms_norm_kernel[(triton.cdiv(rows.shape[0], per_program),)](
        rows, weight if weight is not None else rows, out, rows.shape[0], cols, rows.stride(0), out.stride(0), eps,
        HAS_WEIGHT=weight is not None, ROWS=per_program, BLOCK=block,
        num_warps=min(16, max(1, per_program * block // 256)),
    )  # fmt: skip
    return out.view(shape)


def _norm_forward(module: torch.nn.Module, original):
    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        weight = module.weight if module.with_scale else None
        if _needs_grad(hidden_states, weight):
            return original(hidden_states)
        return guarded("norms", lambda: rms_norm(hidden_states, weight, module.eps), lambda: original(hidden_states))

    return forward


def use_fused_norms(model: torch.nn.Module, on: bool = True) -> int:
    """Run every ``DiffusionGemmaRMSNorm`` of ``model`` as :func:`rms_norm` (``on``) or as transformers' module again;
    returns the number of norms switched."""
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaRMSNorm

    norms = [m for m in model.modules() if isinstance(m, DiffusionGemmaRMSNorm)]
    for m in norms:
        if on:
            m.forward = _norm_forward(m, type(m).forward.__get__(m))
        else:
            m.__dict__.pop("forward", None)
    return len(norms)


# --- Sampling ------------------------------------------------------------------------------------------------------
# Between two decoder steps, :func:`asr.decoding.denoise` turns the (batch, canvas, 262144) logits into a sample, an
# argmax, entropies and the next step's self-conditioning: in eager PyTorch ~30 passes over full-vocabulary float32
# tensors (softcapping, temperature, softmax, the exponential race, three entropies, the casts), at batch 16 most of
# a step's non-matmul GPU time and its memory peak (bench/logs/2026-11-28-h200-run2-transcribe-16x-profile.txt). Here
# one program per canvas position reads its row of raw bf16 logits three times and writes the self-conditioning
# probabilities over them.


@triton.jit
def _tanh(x, EXACT: tl.constexpr):
    if EXACT:  # CUDA's tanhf, as torch.tanh
        return libdevice.tanh(x)
    e = tl.exp(-2.0 * tl.abs(x))  # Triton's interpreter has no libdevice: ~1e-7 absolute error
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _scaled_logits(ptr, offs, mask, softcap, temperature, HAS_CAP: tl.constexpr, EXACT: tl.constexpr):
    """transformers' ``softcap * tanh(logits / softcap)`` in float32, then / temperature; -inf past the vocabulary."""
    y = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_CAP:
        y = _tanh(y / softcap, EXACT) * softcap
    return tl.where(mask, y / temperature, float("-inf"))


@triton.jit
def _sample_kernel(
    logits_ptr, q_ptr, seed_ptr, sampled_ptr, argmax_ptr, entropy_ptr, confidence_ptr, probs_ptr,
    vocab, softcap, temperature,
    HAS_CAP: tl.constexpr, USE_Q: tl.constexpr, EXACT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """One canvas position: y = scaled logits; argmax y; a sample from softmax(y) (argmax p / q, q ~ Exp(1)); the
    entropy and top probability of softmax(y); softmax(y rounded to the probabilities' dtype), written in that dtype
    (the next step's self-conditioning input, as transformers computes it from bf16 logits) over ``probs_ptr``, which
    may be ``logits_ptr`` itself: every element is read before it is overwritten, by the same program."""
    row = tl.program_id(0).to(tl.int64)
    logits_row, probs_row = logits_ptr + row * vocab, probs_ptr + row * vocab
    cols = tl.arange(0, BLOCK)
    # 1. the maximum and its first index
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_at = tl.zeros([BLOCK], tl.int32)
    for start in range(0, vocab, BLOCK):
        offs = start + cols
        y = _scaled_logits(logits_row, offs, offs < vocab, softcap, temperature, HAS_CAP, EXACT)
        take = y > best
        best, best_at = tl.where(take, y, best), tl.where(take, offs, best_at)
    top = tl.max(best, axis=0)
    tl.store(argmax_ptr + row, tl.min(tl.where(best == top, best_at, vocab), axis=0).to(tl.int64))
    # 2. the normalisers: sum exp(y - top), sum exp(y - top) (y - top) for the entropy, and those of the rounded y
    top_rounded = top.to(probs_ptr.dtype.element_ty).to(tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    weighted = tl.zeros([BLOCK], tl.float32)
    total_rounded = tl.zeros([BLOCK], tl.float32)
    for start in range(0, vocab, BLOCK):
        offs = start + cols
        mask = offs < vocab
        y = _scaled_logits(logits_row, offs, mask, softcap, temperature, HAS_CAP, EXACT)
        d = tl.where(mask, y - top, 0.0)
        w = tl.where(mask, tl.exp(d), 0.0)
        total += w
        weighted += w * d
        total_rounded += tl.exp(y.to(probs_ptr.dtype.element_ty).to(tl.float32) - top_rounded)
    norm, norm_rounded = tl.sum(total, axis=0), tl.sum(total_rounded, axis=0)
    # H = -sum p log p = log Z - sum p (y - top), with Z = sum exp(y - top): no cancellation when H is small
    tl.store(entropy_ptr + row, tl.log(norm) - tl.sum(weighted, axis=0) / norm)
    tl.store(confidence_ptr + row, 1.0 / norm)
    # 3. the sample (torch.multinomial's exponential race), and the self-conditioning probabilities
    if not USE_Q:
        seed = tl.load(seed_ptr)
    race = tl.full([BLOCK], -1.0, tl.float32)
    race_at = tl.zeros([BLOCK], tl.int32)
    for start in range(0, vocab, BLOCK):
        offs = start + cols
        mask = offs < vocab
        y = _scaled_logits(logits_row, offs, mask, softcap, temperature, HAS_CAP, EXACT)
        if USE_Q:
            q = tl.load(q_ptr + row * vocab + offs, mask=mask, other=1.0)
        else:  # u in [0, 1): -log u ~ Exp(1), infinite (never chosen) at u = 0
            q = -tl.log(tl.rand(seed, (row * vocab + offs).to(tl.uint32)))
        r = tl.where(mask, tl.exp(y - top) / norm / q, -1.0)
        take = r > race
        race, race_at = tl.where(take, r, race), tl.where(take, offs, race_at)
        rounded = y.to(probs_ptr.dtype.element_ty).to(tl.float32)
        p = tl.exp(rounded - top_rounded) / norm_rounded
        tl.store(probs_row + offs, p.to(probs_ptr.dtype.element_ty), mask=mask)
    won = tl.max(race, axis=0)
    tl.store(sampled_ptr + row, tl.min(tl.where(race == won, race_at, vocab), axis=0).to(tl.int64))


def sample_logits(
    logits: torch.Tensor,
    temperature: float,
    softcap: float | None,
    probs: torch.Tensor,
    seed: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
) -> decoding.Draw:
    """Everything :func:`asr.decoding.denoise` needs from a step's raw logits (batch, canvas, vocab; the lm_head's
    output, before softcapping), in one kernel launch: with ``y = softcap * tanh(logits / softcap) / temperature``,
    the argmax of y, one sample from softmax(y), the entropy and the top probability of softmax(y), and
    ``softmax(y.to(probs.dtype))`` written into ``probs`` (the next step's self-conditioning; ``probs`` may be
    ``logits``, overwritten in place).

    The sample is the exponential race ``argmax(p / q)`` that ``torch.multinomial`` runs: with ``q`` (float32, the
    logits' shape, drawn by ``exponential_``) it is exactly the draw of :func:`asr.decoding.sample` (tests); without,
    ``q = -log u`` with u from Triton's Philox generator keyed by ``seed`` (an int64 tensor of one element on the
    device, so no host synchronisation) and the element's index: the same distribution, other random numbers.
    Entropies are float32 sums in another order than transformers' ``Categorical``: equal to ~1e-6."""
    batch, length, vocab = logits.shape
    if not logits.is_contiguous() or not probs.is_contiguous() or probs.shape != logits.shape:
        raise ValueError("sample_logits needs contiguous logits and probs of one shape")
    if q is None and seed is None:
        raise ValueError("sample_logits needs a seed tensor or the exponential draws q")
    device = logits.device
    sampled = torch.empty((batch, length), dtype=torch.long, device=device)
    argmax = torch.empty_like(sampled)
    entropy = torch.empty((batch, length), dtype=torch.float32, device=device)
    confidence = torch.empty_like(entropy)
    _sample_kernel[(batch * length,)](
        logits, q if q is not None else logits, seed if seed is not None else sampled, sampled, argmax, entropy,
        confidence, probs, vocab, float(softcap or 1.0), float(temperature),
        HAS_CAP=softcap is not None, USE_Q=q is not None, EXACT=not INTERPRETED,
        BLOCK=min(4096, triton.next_power_of_2(vocab)), num_warps=8,
    )  # fmt: skip
    return decoding.Draw(sampled, argmax, entropy, confidence)


# --- switching a model over ------------------------------------------------------------------------------------------


def supports(experts: torch.nn.Module) -> bool:
    """Whether ``experts`` (a transformers experts module) has the layout and activation the kernels implement."""
    config = getattr(experts, "config", None)
    return (
        getattr(experts, "has_gate", False)
        and not getattr(experts, "has_bias", True)
        and not getattr(experts, "is_transposed", True)
        and getattr(experts, "is_concatenated", False)
        and not getattr(experts, "has_post_expert_norm", True)
        and getattr(config, "hidden_activation", None) in ACTIVATIONS
    )


def experts_forward(
    self: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
) -> torch.Tensor:
    """transformers' experts-implementation signature; a layout the kernels do not cover, and training (the kernels
    have no backward), use ``grouped_mm``."""
    from transformers.integrations.moe import grouped_mm_experts_forward

    def fallback():
        return grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)

    if _needs_grad(hidden_states, self.gate_up_proj, self.down_proj) or not supports(self):
        return fallback()
    return guarded(
        "experts",
        lambda: fused_experts(hidden_states, top_k_index, top_k_weights, self.gate_up_proj, self.down_proj,
                              self.config.hidden_activation),
        fallback,
    )  # fmt: skip


def use_fused_experts(model: torch.nn.Module, on: bool = True) -> str:
    """Switch ``model``'s experts to these kernels (``on``) or back to ``grouped_mm``; returns the one now in use."""
    from transformers.integrations.moe import ExpertsInterface

    ExpertsInterface.register(NAME, experts_forward)
    name = NAME if on else "grouped_mm"
    model.set_experts_implementation(name)
    return name


def use_fused(model: torch.nn.Module, norms: bool = True, experts: bool = True, sampling: bool = True) -> str:
    """Switch ``model``'s RMSNorms and MoE experts to these kernels (each ``True``) or back to transformers' own, and
    :class:`asr.Pipeline`'s denoising loop to :func:`asr.decoding.denoise_fused` with :func:`sample_logits`
    (``sampling``); returns what now runs in the backbone: ``"fused"``, ``"fusednorms"``, ``"fusedmoe"`` or
    ``"transformers"``."""
    use_fused_norms(model, on=norms)
    use_fused_experts(model, on=experts)
    fast.use_fused_sampling(model, on=sampling)
    return {(True, True): "fused", (True, False): "fusednorms", (False, True): "fusedmoe"}.get(
        (norms, experts), "transformers"
    )
