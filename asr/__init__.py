"""diffusion-gemma-asr: speech recognition whose transcript is denoised by DiffusionGemma.

>>> import asr
>>> pipe = asr.load()                      # interfaze-ai/diffusion-gemma-asr-small (needs HF_TOKEN, ~52 GB GPU)
>>> pipe = asr.load("tiny-random")         # tiny random stack of the same classes (tests, CI)
>>> t = pipe.transcribe("speech.wav", steps=16, seed=0)
>>> t.text, t.segments[0].steps[-1].argmax, t.to_srt()
"""

from .audio import AudioError, load_audio
from .decoding import DenoiseOptions
from .loading import DEFAULT_MODEL, AdapterError, ModelLoadError, load
from .pipeline import Pipeline
from .transcript import Segment, Step, Timings, Transcript, Word

__all__ = [
    "DEFAULT_MODEL",
    "AdapterError",
    "AudioError",
    "DenoiseOptions",
    "ModelLoadError",
    "Pipeline",
    "Segment",
    "Step",
    "Timings",
    "Transcript",
    "Word",
    "load",
    "load_audio",
]
