"""The benchmark: the tiny CPU run (--quick), its records and RESULTS.md, and the real-size build's tied weights."""

from __future__ import annotations

import json

import pytest
import torch

from asr import bench, fast
from asr import model as M


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, bench.run("tiny", "cpu", out, quick=True, threads=1)


def test_quick_run_records(quick):
    out, records = quick
    by_case = {r["case"]: r for r in records}
    assert set(bench.REQUIRED_CASES) <= set(by_case)
    for rec in records:
        assert all(f in rec for f in bench.REQUIRED_FIELDS), rec
        assert not rec.get("error"), rec
        assert rec["size"] == "tiny" and rec["device"].startswith("cpu: 1 thread")
    assert json.loads((out / "results.json").read_text()) == records  # written as the cases finish
    profile = (out / bench.PROFILE_FILE).read_text()  # the decoder step's operator table
    assert profile.startswith("3 eager decoder steps at batch 1 on cpu") and "aten::" in profile
    for case in ("1x30s-8steps", "1x30s-16steps", "20x30s-8steps", "first-transcript", "decoder-step", "prefill"):
        assert by_case[case]["seconds"] > 0
    assert by_case["1x30s-8steps"]["steps_run"] == 8 and by_case["1x30s-16steps"]["steps_run"] == 16
    assert by_case["20x30s-8steps"]["segments"] == 20 and by_case["20x30s-8steps"]["audio_s"] == 600
    assert by_case["1x30s-8steps-5words"]["words"] == 5 and by_case["1x30s-8steps-60words"]["words"] == 60
    assert by_case["baseline-whisper-small-ar-100tok"]["new_tokens"] >= 100
    assert by_case["baseline-generate-eager-8steps"]["new_tokens"] == 192
    assert by_case["1x30s-8steps"]["peak_gb"] is None  # not measured on the CPU
    assert by_case["1x30s-8steps-cudagraph"]["steps_run"] == 8  # asr.fast's path (eager fallback on the CPU)


def test_results_md_and_append(quick, tmp_path):
    _, records = quick
    path = tmp_path / "results.json"
    assert len(bench.append_records(records, path)) == len(records)
    assert len(bench.append_records(records, path)) == len(records)  # the same run is not appended twice
    text = bench.write_md(bench.load_records(path), tmp_path / "RESULTS.md")
    assert (tmp_path / "RESULTS.md").read_text() == text
    for case in bench.REQUIRED_CASES:
        assert f"| {case} |" in text
    assert "Issue 4 targets" not in text  # only for real-size GPU runs
    gpu = [{**r, "size": "real", "device": "NVIDIA H100 80GB HBM3", "run": "gpu", "peak_gb": 55.0} for r in records]
    text = bench.write_md(gpu + records, tmp_path / "RESULTS.md")
    assert "Issue 4 targets" in text and "| peak GPU memory (project path) | <= 60 GB | 55.00 GB | yes |" in text


def test_graphed_words_case_forces_each_canvas():
    """words(graphed=True) runs through graphed_pipeline (asr.fast; its eager fallback on the CPU) and gets the forced
    5 and 60 words back, with the pipeline's settings restored afterwards."""
    stack = bench.build_stack("tiny", "cpu")
    settings = bench.Settings(repeats=1, multi_repeats=1, warmup=0, budget_s=None, static_compile_s=0.0, check=False)
    b = bench.Bench(stack, settings, None)
    b.words(graphed=True)
    by_case = {r["case"]: r for r in b.records}
    assert by_case["1x30s-8steps-5words-cudagraph"]["words"] == 5
    assert by_case["1x30s-8steps-60words-cudagraph"]["words"] == 60
    assert stack.pipeline.cuda_graphs is False and stack.pipeline.graph_max_batch == 4


def test_targets_judge_the_path_pipeline_takes():
    """1-4 window cases are judged on their CUDA-graph records when the run has all of a pair; 20 windows stay eager."""
    names = ["1x30s-8steps", "1x30s-8steps-cudagraph", "1x30s-8steps-norecord", "20x30s-8steps",
             "20x30s-8steps-cudagraph"]  # fmt: skip
    run = [{"case": c} for c in names]
    assert bench.pipeline_path(("1x30s-8steps",), run) == ("1x30s-8steps-cudagraph",)
    assert bench.pipeline_path(("20x30s-8steps",), run) == ("20x30s-8steps",)
    pair = ("1x30s-8steps", "1x30s-8steps-norecord")
    assert bench.pipeline_path(pair, run) == pair  # no graphed no-record case: both eager, never mixed
    run.append({"case": "1x30s-8steps-norecord-cudagraph"})
    assert bench.pipeline_path(pair, run) == ("1x30s-8steps-cudagraph", "1x30s-8steps-norecord-cudagraph")
    assert bench.pipeline_path(("first-transcript",), run) == ("first-transcript",)


def test_targets_of_a_fused_run_judge_20_windows_graphed():
    """With the fused loop (records say sampling: fused) Pipeline graphs batches of up to graph_max_batch_fused
    windows: 20 windows (16 + 4) are judged on their graphed record, and the reference loop's attribution cases
    are left out of the peak."""
    names = ["20x30s-8steps", "20x30s-8steps-cudagraph", "20x30s-8steps-refsampling"]
    run = [{"case": c, "sampling": "fused", "peak_gb": 50.0 + i, "seconds": 1.0} for i, c in enumerate(names)]
    assert bench.pipeline_path(("20x30s-8steps",), run) == ("20x30s-8steps-cudagraph",)
    peak_row = bench.targets_table(run)[-1]
    assert "51.00 GB" in peak_row and "-refsampling" in peak_row


def test_sampling_group_on_the_tiny_stack():
    """Bench.sampling (a GPU group) on the tiny CPU stack with fused sampling on and the kernel in Triton's
    interpreter: its check passes, every case gives a record, and the stack's loop is restored afterwards."""
    stack = bench.build_stack("tiny", "cpu", canvas_length=16)
    fast.use_fused_sampling(stack.model.backbone)
    stack.info["sampling"] = "fused"
    settings = bench.Settings(repeats=1, multi_repeats=1, warmup=0, budget_s=None, static_compile_s=0.0, check=False)
    b = bench.Bench(stack, settings, None)
    b.fused_step_batches = (1, 2)  # the interpreter runs a program per canvas position in Python
    b.sampling()
    by_case = {r["case"]: r for r in b.records}
    assert by_case["check-fused-sampling"]["ok"] is True
    cases = ["fused-step", "fused-step-2x", "20x30s-8steps-batch20", "20x30s-8steps-cudagraph-batch20",
             "1x30s-8steps-cudagraph-refsampling", "20x30s-8steps-refsampling"]  # fmt: skip
    for case in cases:
        assert by_case[case]["seconds"] > 0, case
    assert by_case["20x30s-8steps-batch20"]["batch"] == 20
    assert by_case["20x30s-8steps-refsampling"]["sampling"] == "reference"
    assert fast.fused_sampling(stack.model.backbone)


def test_stand_in_tokenizer_word_counts():
    tok = bench.StandInTokenizer([0, 1, 2])
    for words in (1, 5, 60):
        ids = bench.StandInTokenizer.ids_for_words(words, 12_800)
        assert len(tok.decode(ids + [1, 0, 0]).split()) == words
    assert len(bench.StandInTokenizer.ids_for_words(60, 128)) == 80  # ~1.33 tokens per word


def test_real_size_build_on_meta_keeps_weights_tied():
    backbone = bench.build_real_backbone(device="meta")
    report = bench.tie_report(backbone)
    assert report["untied"] == [] and report["pairs"] > 400
    assert 49 < report["unique_param_gb"] < 54 < 98 < report["all_param_gb"]  # ~51 GB stored once, not ~100 GB
    enc, dec = backbone.model.encoder.language_model, backbone.model.decoder
    assert enc.layers[3].experts.gate_up_proj is dec.layers[3].experts.gate_up_proj
    assert enc.layers[5].self_attn.q_proj.weight is dec.layers[5].self_attn.q_proj.weight
    assert backbone.lm_head.weight is dec.embed_tokens.weight is enc.embed_tokens.weight
    assert backbone.dtype == torch.bfloat16 and dec.rotary_emb.full_attention_inv_freq.dtype == torch.float32


def test_materialise_shares_tied_storage_and_initialise_fills_everything():
    """On the CPU with the tiny config: what the GPU run does, checked storage by storage."""
    from transformers import DiffusionGemmaForBlockDiffusion

    with torch.device("meta"):
        backbone = DiffusionGemmaForBlockDiffusion._from_config(M.tiny_backbone_config(), dtype=torch.bfloat16)
    bench.materialise(backbone, "cpu")  # NaN-poisoned
    assert bench.nan_tensors(backbone)
    bench.initialise(backbone)
    report = bench.check_real_build(backbone)
    assert report["ok"], report
    enc, dec = backbone.model.encoder.language_model, backbone.model.decoder
    assert enc.layers[0].mlp.gate_proj.weight.data_ptr() == dec.layers[0].mlp.gate_proj.weight.data_ptr()
    assert float(dec.embed_tokens.embed_scale) == 8.0 and float(enc.layers[0].layer_scalar) == 1.0
    # nn.Module.to_empty would give each owner its own copy: the reason materialise() exists
    with torch.device("meta"):
        other = DiffusionGemmaForBlockDiffusion._from_config(M.tiny_backbone_config())
    other.to_empty(device="cpu")
    assert bench.tie_report(other)["untied"]
