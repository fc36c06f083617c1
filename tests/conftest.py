"""Shared fixtures: the tiny random stack and synthetic audio with known structure."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# asr.kernels' tests run Triton kernels on the CPU in Triton's interpreter. It must be on before torch or
# transformers first import triton (in whichever test module is collected first), or nested @triton.jit calls fail.
os.environ["TRITON_INTERPRET"] = "1"

import numpy as np
import pytest
import soundfile as sf
import torch

# The tiny models are overhead-bound: one thread is faster on 2 cores and leaves the other to the app/browser.
torch.set_num_threads(1)

SR = 16_000


def same_threads_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess whose transcript a test compares with one made in this process: the same
    number of CPU threads (torch reads ``OMP_NUM_THREADS``), since a different split of the sums can flip a token
    where two are nearly tied."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), **extra}


ROOT = Path(__file__).resolve().parents[1]


def train_script(name: str):
    """The module of ``train/<name>.py`` (the training scripts are not a package), loaded once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "train" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def speechlike(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Voiced-sounding noise: a 120-240 Hz buzz with formant-like filtering and syllable-rate amplitude."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 60 * rng.random()
    buzz = np.sign(np.sin(2 * np.pi * f0 * t)) * 0.3 + 0.05 * rng.standard_normal(t.size)
    syllables = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t + rng.random() * 6) ** 2
    return (buzz * syllables * 0.5).astype(np.float32)


def with_pauses(pattern: list[tuple[str, float]], seed: int = 0) -> np.ndarray:
    """Concatenate ('speech', s) and ('pause', s) pieces; pauses are digital silence plus faint noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, (kind, seconds) in enumerate(pattern):
        if kind == "speech":
            parts.append(speechlike(seconds, seed + i))
        else:
            parts.append((1e-5 * rng.standard_normal(int(seconds * SR))).astype(np.float32))
    return np.concatenate(parts)


@pytest.fixture(scope="session")
def tiny():
    import asr

    return asr.load("tiny-random", device="cpu")


@pytest.fixture()
def speech_wav(tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(path, speechlike(3.0), SR)
    return path
