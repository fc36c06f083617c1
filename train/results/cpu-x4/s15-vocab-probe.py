"""The experiment script of section 10, as run (session 15; paths are that machine's /root/asr-work).

Probe (session 15): does a smaller / normalised CTC vocabulary make mini's audio side better?

CTC only, from mini's projector, a FRESH output matrix E (V x 256) in place of the tied lm_head, so every variant
starts its head from scratch and trains the same steps on the same batches. Variants:
  cased4096  mini's own tokenizer (cased, punctuated text): the control
  normN      a byte-level BPE of N pieces trained on normalised text (lower case, letters/digits/apostrophes)
  mini       no training: mini's projector and its own lm_head (sanity check against asr.evaluate --ctc)
Scores: greedy CTC WER (Whisper-normalised) on the real-speech and held-out Kokoro sets.
"""

import argparse
import json
import math
import random
import re
import sys
import time
from pathlib import Path

import soundfile as sf
import torch
import torch.nn.functional as F

sys.path.insert(0, "/work/main/train")
from make_tokenizer import train_tokenizer  # noqa: E402

from asr import model as M  # noqa: E402
from asr import train as T  # noqa: E402
from asr.audio import load_audio  # noqa: E402
from asr.decoding import ctc_collapse  # noqa: E402
from asr.evaluate import error_rates, make_normalizer, read_manifest  # noqa: E402

W = Path("/root/asr-work")
p = argparse.ArgumentParser()
p.add_argument("variant")
p.add_argument("--steps", type=int, default=300)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--manifest", default=str(W / "s14/mix5.tsv"))
p.add_argument("--out", default=None)
p.add_argument("--eval-every", type=int, default=0)
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(1)
out = Path(args.out or W / f"s15/probe-{args.variant}")
out.mkdir(parents=True, exist_ok=True)

speech, mini_tok, features = T.load_exported("/work/main/asr/mini/model")
speech.whisper.requires_grad_(False)
cache = T.FrameCache(W / "s13/frames-trim", speech, features, trim=True)
norm_eval = make_normalizer("en")


def normalise(text: str) -> str:
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " ".join(text.split())


train_utts = read_manifest(args.manifest)
if args.variant.startswith("revocab"):  # mini moved to tok1024 (asr.train.revocab_backbone), no training
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(W / "s15/tok1024"))
    T.revocab_backbone(speech, mini_tok, tok)
    to_text = normalise
elif args.variant.startswith("norm"):
    size = int(args.variant[4:])
    texts = sorted({normalise(u.text) for u in train_utts})
    tok = train_tokenizer(texts, vocab_size=size)
    to_text = normalise
else:
    tok = mini_tok
    to_text = lambda s: s  # noqa: E731
V = len(tok)
blank = tok.pad_token_id
print(f"variant {args.variant}: vocab {V}, blank {blank}", flush=True)

if args.variant in ("mini", "revocab"):
    head = speech.backbone.lm_head.weight.detach().clone()
else:
    head = torch.nn.Parameter(torch.randn(V, speech.backbone.config.get_text_config().hidden_size) * 0.02)

seconds_of = {}


def seconds(path: Path) -> float:
    if path not in seconds_of:
        seconds_of[path] = sf.info(str(path)).duration
    return seconds_of[path]


def logits(frames: torch.Tensor) -> torch.Tensor:
    return F.linear(speech.projector(frames), head)


@torch.no_grad()
def evaluate(name: str, manifest: Path) -> dict:
    utts = read_manifest(manifest)
    refs, hyps = [], []
    for u in utts:
        wave = load_audio(u.audio)
        pieces = [wave[i : i + 480000] for i in range(0, len(wave), 480000)]  # 30 s windows
        text = []
        for w in pieces:
            feats = features([w], sampling_rate=16000, return_tensors="pt").input_features
            fr = speech.whisper_frames(feats, len(w) / 16000).float()  # trimmed, as the pipeline
            slots = M.audio_slots(len(w) / 16000, speech.projector.subsampling)
            best = logits(fr)[0, :slots].argmax(-1).tolist()
            text.append(tok.decode(ctc_collapse(best, blank), skip_special_tokens=True))
        hyps.append(" ".join(text))
        refs.append(u.text)
    r = error_rates(refs, hyps, norm_eval)
    print(f"  eval {name}: WER {r.wer:.2f}% CER {r.cer:.2f}%", flush=True)
    return {"wer": r.wer, "cer": r.cer, "examples": list(zip(refs[:5], hyps[:5], strict=True))}


def run_eval(step: int) -> dict:
    speech.projector.eval()
    res = {
        "step": step,
        "real": evaluate("real", W / "real-speech/manifest.tsv"),
        "kokoro": evaluate("kokoro", W / "kokoro-test/test.tsv"),
    }
    speech.projector.train()
    with open(out / "eval.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    return res


if args.variant in ("mini", "revocab"):
    run_eval(0)
    sys.exit(0)

examples = []
for u in train_utts:
    ids = tok.encode(to_text(u.text), add_special_tokens=False)
    if ids:
        examples.append(T.Example(u.audio, u.text, ids, seconds(u.audio)))
print(f"{len(examples)} examples", flush=True)

params = list(speech.projector.parameters()) + [head]
for q in speech.projector.parameters():
    q.requires_grad_(True)
opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
rng = random.Random(1)
order = []
log = open(out / "log.jsonl", "w")
t0 = time.time()
for step in range(1, args.steps + 1):
    warm = 30
    cosine = 0.5 * (1 + math.cos(math.pi * (step - warm) / (args.steps - warm)))
    lr = args.lr * (step / warm if step <= warm else 0.1 + 0.9 * cosine)
    for g in opt.param_groups:
        g["lr"] = lr
    if len(order) < args.batch:
        perm = list(range(len(examples)))
        rng.shuffle(perm)
        order += perm
    batch = [examples[i] for i in order[: args.batch]]
    del order[: args.batch]
    frames = cache.load(batch)
    lp = F.log_softmax(logits(frames).float(), -1)
    S = lp.shape[1]
    lengths = torch.tensor([min(S, M.audio_slots(e.seconds, speech.projector.subsampling)) for e in batch])
    need = torch.tensor([len(e.ids) + sum(a == b for a, b in zip(e.ids, e.ids[1:], strict=False)) for e in batch])
    lengths = torch.where(need > lengths, torch.full_like(lengths, S), lengths)
    tl = torch.tensor([len(e.ids) for e in batch])
    per = F.ctc_loss(
        lp.transpose(0, 1),
        torch.tensor([t for e in batch for t in e.ids]),
        lengths,
        tl,
        blank=blank,
        reduction="none",
        zero_infinity=True,
    )
    loss = (per / tl).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    chars = sum(len(normalise(e.text)) for e in batch)
    row = {"step": step, "ctc": loss.item(), "nats_per_char": per.sum().item() / chars, "lr": lr, "s": time.time() - t0}
    log.write(json.dumps(row) + "\n")
    log.flush()
    if step % 10 == 0:
        print(f"step {step} ctc {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    if args.eval_every and step % args.eval_every == 0 and step < args.steps:
        run_eval(step)
run_eval(args.steps)
torch.save({"projector": speech.projector.state_dict(), "head": head.detach()}, out / "probe.pt")
