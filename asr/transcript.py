"""The transcript object: text, timed segments, the per-step denoising record, timings and output formats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Step:
    """One denoising step of one segment (all lists have the canvas length).

    ``canvas`` is the canvas the decoder was given at this step (uniform random tokens at the first step),
    ``sampled`` the tokens drawn from the denoiser, ``argmax`` the most likely token per position (the draft),
    ``accepted`` whether the entropy-bound sampler kept the sampled token (the others are re-noised),
    ``confidence`` the probability of the argmax token and ``entropy`` the entropy of the temperature-scaled
    distribution.
    """

    index: int
    temperature: float
    canvas: list[int]
    sampled: list[int]
    argmax: list[int]
    accepted: list[bool]
    confidence: list[float]
    entropy: list[float]


@dataclass
class StepTrace:
    """Every step of one segment, stored as arrays of shape (steps, canvas_length)."""

    temperature: np.ndarray
    canvas: np.ndarray
    sampled: np.ndarray
    argmax: np.ndarray
    accepted: np.ndarray
    confidence: np.ndarray
    entropy: np.ndarray

    def __len__(self) -> int:
        return int(self.canvas.shape[0])

    def __getitem__(self, i: int) -> Step:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        return Step(
            index=i,
            temperature=float(self.temperature[i]),
            canvas=self.canvas[i].tolist(),
            sampled=self.sampled[i].tolist(),
            argmax=self.argmax[i].tolist(),
            accepted=self.accepted[i].tolist(),
            confidence=[round(float(x), 5) for x in self.confidence[i]],
            entropy=[round(float(x), 5) for x in self.entropy[i]],
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@dataclass
class Word:
    """One word and when it is spoken, in seconds from the start of the audio (as whisper's ``word_timestamps``)."""

    word: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3)}


@dataclass
class Segment:
    """A stretch of audio (at most 30 s) and its transcript. ``words`` has word timings where the model gives them
    (an aligned canvas or the CTC head: one position per audio slot); it is empty for the packed canvas.
    ``final_canvas`` is the canvas the text was read from when that is not the last step's argmax (a joint reading
    with the CTC head, ``DenoiseOptions.ctc_weight``), kept with the step record; else None."""

    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    steps: StepTrace | None = None
    words: list[Word] = field(default_factory=list)
    final_canvas: list[int] | None = None

    def to_dict(self, steps: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
            "tokens": list(self.tokens),
        }
        if self.words:
            out["words"] = [w.to_dict() for w in self.words]
        if steps and self.steps is not None:
            out["steps"] = [step.__dict__ for step in self.steps]
            if self.final_canvas is not None:
                out["final_canvas"] = list(self.final_canvas)
        return out


@dataclass
class Timings:
    """Where the time went, in seconds. ``stages`` maps a stage name to its wall time."""

    audio_seconds: float
    wall_seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def rtfx(self) -> float:
        """Real-time factor: audio seconds per processing second (higher is faster)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 4),
            "rtfx": round(self.rtfx, 2) if self.wall_seconds > 0 else None,
            "stages": {k: round(v, 4) for k, v in self.stages.items()},
        }


@dataclass
class Transcript:
    """The result of :meth:`asr.Pipeline.transcribe`."""

    segments: list[Segment]
    timings: Timings
    model: str = ""
    steps: int = 0
    seed: int | None = None
    ctc_weight: float = 0.0  # > 0: the final canvases were read jointly with the CTC head (DenoiseOptions)
    lexicon: bool = False  # True: that joint reading spelled its words from the model's lexicon (DenoiseOptions)
    # DenoiseOptions.draw: "exact" (generate()'s random numbers) or "cdf"; the fused CUDA loop draws with its kernel
    draw: str = "exact"

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def no_speech(self) -> bool:
        """True when the audio held no speech: silence is answered with an empty transcript, not invented text."""
        return not self.segments

    def to_dict(self, steps: bool = True) -> dict[str, Any]:
        """A JSON-safe dict; ``steps=False`` leaves out the per-step canvases."""
        return {
            "text": self.text,
            "no_speech": self.no_speech,
            "model": self.model,
            "steps": self.steps,
            "seed": self.seed,
            "ctc_weight": self.ctc_weight,
            "lexicon": self.lexicon,
            "draw": self.draw,
            "timings": self.timings.to_dict(),
            "segments": [s.to_dict(steps=steps) for s in self.segments],
        }

    def to_json(self, steps: bool = True, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(steps=steps), indent=indent, ensure_ascii=False)

    def to_txt(self) -> str:
        return self.text + "\n" if self.text else ""

    def to_srt(self) -> str:
        cues = [s for s in self.segments if s.text.strip()]
        return "".join(
            f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n\n"
            for i, s in enumerate(cues, 1)
        )

    def to_vtt(self) -> str:
        cues = [s for s in self.segments if s.text.strip()]
        body = "".join(f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n\n" for s in cues)
        return "WEBVTT\n\n" + body

    def format(self, fmt: str) -> str:
        """Render as ``txt``, ``json``, ``srt`` or ``vtt``."""
        writers = {"txt": self.to_txt, "json": self.to_json, "srt": self.to_srt, "vtt": self.to_vtt}
        if fmt not in writers:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(writers)}")
        return writers[fmt]()


def _timestamp(seconds: float, decimal_marker: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal_marker}{ms:03d}"
