"""How much of the transcript the diffusion decoder gets from the audio, at fixed noise levels.

    python train/denoiser_probe.py --model runs/small/model --manifest data/synth/train.tsv [--count 8]

For the first ``count`` clips of the manifest, the clean transcript canvas is corrupted with uniform-random ids at
a fraction gamma of its positions (as in training), and the decoder's cross-entropy and argmax accuracy at the
transcript's positions are printed, once with each clip's own audio and once with another clip's (the batch rolled
by one). With the right audio and gamma = 1 (nothing left of the canvas) the decoder has only the audio to go on:
a model whose AR and CTC losses are low but whose gamma = 1 cross-entropy stays high has an encoder that knows the
transcript and a decoder that has not yet learned to place it on the canvas.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from asr import train as T
from asr.decoding import eager_step


@torch.no_grad()
def probe(model: str, manifest: str, count: int, gammas: list[float], seed: int = 0) -> list[dict]:
    cfg = T.continue_settings(T.TrainConfig(manifest=manifest, out="unused", model=model, train="all"))
    speech, tokenizer, features = T.build_model(cfg)
    speech.eval()
    examples, _ = T.prepare_examples(T.read_manifest(manifest), tokenizer, speech.canvas_length)
    examples = examples[:count]
    frames = T.MemoryFrameCache(speech, features).load(examples)
    batch = T.make_batch(examples, speech.prompt, speech.canvas_length)
    backbone = speech.backbone
    vocab = backbone.config.text_config.vocab_size
    audio = speech.projector(frames).to(backbone.dtype)
    if cfg.canvas == "aligned":
        batch = T.aligned_batch(batch, T.ctc_log_probs(speech, audio), speech.prompt.pad_id)
    embeds = speech.prompt_embeddings(audio)
    B, C = batch.canvas.shape
    P = embeds.shape[1]
    text = batch.canvas_text
    rows = []
    for gamma in gammas:
        for audio in ("own", "other"):
            cache = speech.prefill(embeds if audio == "own" else embeds.roll(1, dims=0))
            g = torch.Generator().manual_seed(seed)
            corrupt = torch.rand((B, C), generator=g) < gamma
            noisy = torch.where(corrupt, torch.randint(0, vocab, (B, C), generator=g), batch.canvas)
            logits = eager_step(backbone, cache, P, B)(noisy, None).float()  # the inference step, first step
            ce = F.cross_entropy(logits.reshape(-1, vocab), batch.canvas.reshape(-1), reduction="none").view(B, C)
            accuracy = (logits.argmax(-1) == batch.canvas)[text].float().mean()
            ce_text = float(ce[text].mean())
            rows.append({"gamma": gamma, "audio": audio, "text_ce": ce_text, "accuracy": float(accuracy)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an exported small-model folder (OUT/model)")
    p.add_argument("--manifest", required=True, help="TSV or JSONL of clips")
    p.add_argument("--count", type=int, default=8, help="clips to probe (default 8)")
    p.add_argument("--gammas", default="0,0.3,0.7,1", help="noise fractions (default 0,0.3,0.7,1)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = probe(args.model, args.manifest, args.count, [float(x) for x in args.gammas.split(",")])
    print("| gamma | audio | text cross-entropy (nats) | token accuracy |\n| ---: | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['gamma']:.1f} | {r['audio']} | {r['text_ce']:.3f} | {100 * r['accuracy']:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
