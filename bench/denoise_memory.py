"""Peak host memory of one ``asr.decoding.denoise`` call with the real vocabulary and canvas, on the CPU.

    python bench/denoise_memory.py [--batch 4] [--steps 2]

The decoder is tiny (2 layers, hidden 64) but its vocabulary (262 144) and canvas (192) are the real model's, so
the full-vocabulary tensors of a denoising step (logits, temperature-scaled logits, probabilities, the sampler's
entropy) have their real size: batch x 192 x 262144. Each measurement runs in a fresh process (``ru_maxrss`` only
grows); the table gives the growth of the peak during the call, also in units of one float32 tensor of that size.
On a GPU the same tensors are what a step adds on top of the weights (bench/RESULTS.md, ``peak GB``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's asr package, from any directory


def measure(batch: int, steps: int, record: bool, dtype: str = "float32") -> dict:
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.cache_utils import DynamicCache

    from asr import model as M
    from asr.decoding import DenoiseOptions, denoise

    torch.set_num_threads(2)
    torch.manual_seed(0)
    vocab, canvas, prompt = 262_144, 192, 204
    backbone = DiffusionGemmaForBlockDiffusion(M.tiny_backbone_config(vocab, hidden=64, canvas_length=canvas)).eval()
    backbone.to(getattr(torch, dtype))
    with torch.no_grad():
        cache = DynamicCache(config=backbone.config.text_config)
        embeds = 0.02 * torch.randn(batch, prompt, 64, dtype=getattr(torch, dtype))
        backbone.model.encoder(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
    generator = torch.Generator().manual_seed(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    denoise(backbone, cache, prompt, batch, DenoiseOptions(steps=steps), generator, record=record)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # ru_maxrss is in KiB on Linux
    unit = batch * canvas * vocab * 4
    return {"batch": batch, "steps": steps, "record": record, "dtype": dtype, "peak_growth_gb": grown / 1e9,
            "units": grown / unit}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="the decoder's dtype (bfloat16: logits as on the GPU)")  # fmt: skip
    p.add_argument("--one", choices=["0", "1"], help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.batch, args.steps, args.one == "1", args.dtype)))
        return 0
    print(f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("| batch | steps | record | dtype | peak growth GB | float32 batch x 192 x 262144 tensors |")
    print("| ---: | ---: | --- | --- | ---: | ---: |")
    for record in ("0", "1"):
        cmd = [sys.executable, __file__, "--batch", str(args.batch), "--steps", str(args.steps), "--one", record,
               "--dtype", args.dtype]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        cells = [row["batch"], row["steps"], row["record"], row["dtype"], f"{row['peak_growth_gb']:.2f}",
                 f"{row['units']:.1f}"]  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
