"""app.py in process, on the tiny random stack: every named endpoint through gradio_client, bad input, 16 clients at
once, the fallback when the requested model cannot load, and a real `python app.py --model tiny-random` start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from app_helpers import EXAMPLES, ROOT, SR, example_files, gradio_temp_dir, import_app, serve, speechlike, write_audio

MAX_SECONDS = 20.0  # the test app's length limit (the real default is 600 s)


@pytest.fixture(scope="module")
def app():
    return import_app()


@pytest.fixture(scope="module")
def pipe(app):
    return app.load_model("tiny-random").pipe


@pytest.fixture(scope="module")
def server(app, tmp_path_factory):
    """The app on the tiny stack, served in this process, with its own Gradio cache folder."""
    cache = tmp_path_factory.mktemp("gradio-cache")
    with gradio_temp_dir(cache):
        demo = app.build_demo(app.load_model("tiny-random"), max_audio_seconds=MAX_SECONDS)
        with serve(demo) as url:
            yield {"url": url, "cache": cache, "demo": demo}


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server["url"], verbose=False)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio")


def _file(path: Path):
    from gradio_client import handle_file

    return handle_file(str(path))


# --- the API ------------------------------------------------------------------------------------------------------


def test_named_endpoints_are_documented_and_ui_events_are_not(client):
    api = client.view_api(print_info=False, return_format="dict")
    named = set(api["named_endpoints"])
    assert {"/transcribe", "/transcribe_with_steps", "/compare_steps"} <= named
    # UI-only events are private and the microphone twin of /transcribe is undocumented
    assert not any(name.startswith("/show_") for name in named), named
    assert "/transcribe_microphone" not in named
    params = [p["parameter_name"] for p in api["named_endpoints"]["/transcribe"]["parameters"]]
    assert params == ["audio", "steps", "seed"]


def test_transcribe_returns_text_and_segments_matching_a_direct_call(client, pipe):
    path = EXAMPLES / "quick_brown_fox.flac"
    text, result = client.predict(_file(path), 8, 5, api_name="/transcribe")
    assert isinstance(text, str) and text == result["text"]
    assert result["steps"] == 8 and result["seed"] == 5 and result["no_speech"] is False
    assert "random weights" in result["model"]
    assert set(result["timings"]) >= {"audio_seconds", "wall_seconds", "rtfx", "stages"}
    assert result["timings"]["audio_seconds"] == pytest.approx(3.94, abs=0.05)
    assert result["segments"], result
    for seg in result["segments"]:
        assert 0 <= seg["start"] < seg["end"] <= result["timings"]["audio_seconds"] + 1e-6
        assert seg["steps_run"] == 8  # the tiny stack never stops early
        assert "steps" not in seg  # the per-step record is /transcribe_with_steps' job
        assert isinstance(seg["tokens"], list)
    direct = pipe.transcribe(str(path), steps=8, seed=5)
    assert text == direct.text
    assert [s["tokens"] for s in result["segments"]] == [s.tokens for s in direct.segments]


@pytest.mark.parametrize("steps", [1, 5])
def test_transcribe_with_steps_records_every_step(client, pipe, steps):
    path = example_files()[1]
    text, record = client.predict(_file(path), steps, 11, api_name="/transcribe_with_steps")
    assert text == record["text"] and record["steps"] == steps
    canvas = pipe.model.canvas_length
    pieces = record["token_pieces"]
    for seg in record["segments"]:
        assert seg["steps_run"] == steps
        assert len(seg["steps"]) == steps
        for i, step in enumerate(seg["steps"]):
            assert step["index"] == i
            for key in ("canvas", "sampled", "argmax", "accepted", "confidence", "entropy"):
                assert len(step[key]) == canvas, key
            assert all(isinstance(a, bool) for a in step["accepted"])
            assert all(0.0 <= c <= 1.0 for c in step["confidence"])
            assert all(str(t) in pieces for t in step["canvas"] + step["argmax"] + step["sampled"])
            assert isinstance(step["draft_text"], str)
        # the last draft is the transcript: nothing is synthesised after the model call
        assert seg["steps"][-1]["draft_text"] == seg["text"]
    # noise tokens are the real tokens: their text is what the tokenizer makes of them
    some = [int(k) for k in list(pieces)[:20]]
    assert [pieces[str(i)] for i in some] == pipe.token_strings(some)
    direct = pipe.transcribe(str(path), steps=steps, seed=11)
    assert np.array_equal(np.array(record["segments"][0]["steps"][0]["canvas"]), direct.segments[0].steps.canvas[0])


def test_a_joint_reading_is_recorded_for_the_visualiser(app):
    """mini reads its final canvas jointly with the CTC head, words spelled from its lexicon: the record carries the
    weight, the lexicon and, per segment, the canvas the text was read from (its tokens in token_pieces), and the
    timing line says how it was read."""
    import asr

    mini = asr.load("mini", device="cpu")
    transcript = mini.transcribe(str(example_files()[0]), steps=4, seed=3)
    record = app.transcript_dict(transcript, steps=True, pipe=mini)
    assert record["ctc_weight"] == mini.model.ctc_weight > 0
    for seg in record["segments"]:
        final = seg["final_canvas"]
        assert len(final) == len(seg["steps"][-1]["argmax"]) and mini.decode(final) == seg["text"]
        assert all(str(t) in record["token_pieces"] for t in final)
    assert record["lexicon"] is True
    assert "read jointly with the CTC head (weight 2, words spelled from its lexicon)" in app.result_info(record)
    assert "final_canvas" not in app.transcript_dict(transcript, steps=False, pipe=mini)["segments"][0]


def test_compare_steps_runs_each_count_with_the_same_seed(client, pipe):
    path = example_files()[2]
    result = client.predict(_file(path), 6, [2, 4, 6, 12], 3, api_name="/compare_steps")
    assert [r["steps"] for r in result["runs"]] == [2, 4, 6, 12]
    assert result["seed"] == 3
    for run in result["runs"]:
        assert run["steps_run"] == run["steps"]
        assert run["timings"]["wall_seconds"] > 0 and run["timings"]["audio_seconds"] > 0
    assert result["runs"][1]["text"] == pipe.transcribe(str(path), steps=4, seed=3).text


def test_microphone_endpoint_takes_a_48khz_int16_recording(client, audio_dir):
    wave = speechlike(2.5, seed=7)
    path = write_audio(
        audio_dir / "mic.wav",
        (np.interp(np.arange(0, len(wave), 1 / 3), np.arange(len(wave)), wave) * 32767).astype(np.int16),
        sr=48_000,
        subtype="PCM_16",
    )
    text, result = client.predict(_file(path), 4, 0, api_name="/transcribe_microphone")
    assert result["timings"]["audio_seconds"] == pytest.approx(2.5, abs=0.01)
    assert result["segments"] and text == result["text"]


def test_random_seed_is_drawn_and_reported(client):
    _, result = client.predict(_file(example_files()[0]), 2, -1, api_name="/transcribe")
    assert isinstance(result["seed"], int) and 0 <= result["seed"] < 2**31


def test_silence_gives_no_speech(client, audio_dir):
    path = write_audio(audio_dir / "silence.wav", np.zeros(2 * SR, dtype=np.float32))
    text, result = client.predict(_file(path), 4, 0, api_name="/transcribe")
    assert text == "" and result["no_speech"] is True and result["segments"] == []
    text, record = client.predict(_file(path), 4, 0, api_name="/transcribe_with_steps")
    assert text == "" and record["no_speech"] is True


# --- bad input: refused with a reason (the validator runs before any model call) --------------------------------


def _error(client, *args, api_name="/transcribe") -> str:
    from gradio_client.exceptions import AppError, ValidationError

    with pytest.raises((AppError, ValidationError)) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_missing_audio_is_refused(client):
    assert "No audio yet" in _error(client, None, 8, 0)


def test_empty_file_is_refused(client, audio_dir):
    empty = audio_dir / "empty.wav"
    empty.write_bytes(b"")
    message = _error(client, _file(empty), 8, 0)
    assert "empty" in message


def test_too_long_audio_is_refused_before_the_model(client, audio_dir, monkeypatch, app):
    path = write_audio(audio_dir / "long.flac", speechlike(MAX_SECONDS + 5, seed=1))
    calls = []
    monkeypatch.setattr(app, "run_model", lambda *a, **k: calls.append(a))
    for api_name in ("/transcribe", "/transcribe_with_steps"):
        message = _error(client, _file(path), 8, 0, api_name=api_name)
        assert "long" in message and "20 s" in message, message
    assert "long" in _error(client, _file(path), 8, [4], 0, api_name="/compare_steps")
    assert calls == []


def test_not_audio_is_refused_with_the_decoder_reason(client, audio_dir):
    fake = audio_dir / "notes.wav"
    fake.write_text("this is not audio\n" * 20)
    message = _error(client, _file(fake), 8, 0)
    assert "could not be decoded as audio" in message
    assert str(audio_dir) not in message and "/tmp/" not in message  # no server paths in messages


def test_nan_audio_is_refused(client, audio_dir):
    wave = speechlike(1.0)
    wave[100] = np.nan
    path = write_audio(audio_dir / "nan.wav", wave, subtype="FLOAT")
    assert "NaN" in _error(client, _file(path), 8, 0)


@pytest.mark.parametrize("steps", [0, 49, 2.5])
def test_bad_step_counts_are_refused(client, steps):
    assert "Steps must be a whole number" in _error(client, _file(example_files()[0]), steps, 0)


def test_bad_seed_and_comparison_are_refused(client):
    assert "seed" in _error(client, _file(example_files()[0]), 4, 1.5).lower()
    message = _error(client, _file(example_files()[0]), 4, [1, 2, 3, 5, 6, 7, 9, 10], 0, api_name="/compare_steps")
    assert "at most" in message


# --- 16 clients at once -------------------------------------------------------------------------------------------


def test_sixteen_concurrent_clients_get_their_own_results(server, pipe, tmp_path, monkeypatch):
    from gradio_client import Client

    # everything this process puts in the temp folder during the test lands here, so leftovers can be seen
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    files = []
    for i in range(16):
        suffix = [".wav", ".flac", ".ogg"][i % 3]
        files.append(write_audio(tmp_path / f"clip{i:02d}{suffix}", speechlike(1.0 + 0.15 * i, seed=100 + i)))
    expected = [pipe.transcribe(str(p), steps=4, seed=i) for i, p in enumerate(files)]
    assert len({e.text for e in expected}) > 8  # different inputs and seeds really give different answers
    cache_before = {p for p in server["cache"].rglob("*") if p.is_file()}

    def call(i: int):
        c = Client(server["url"], verbose=False)
        return c.predict(_file(files[i]), 4, i, api_name="/transcribe")

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(16)))
    elapsed = time.perf_counter() - started
    for i, (text, result) in enumerate(results):
        assert result["seed"] == i
        assert result["timings"]["audio_seconds"] == pytest.approx(expected[i].timings.audio_seconds, abs=1e-3)
        assert text == expected[i].text, f"client {i} got another request's transcript"
        assert [s["tokens"] for s in result["segments"]] == [s.tokens for s in expected[i].segments]
    # nothing left behind: our temp folder is empty, and the Gradio cache holds only the 16 uploads
    assert list(private_tmp.iterdir()) == []
    new = {p for p in server["cache"].rglob("*") if p.is_file()} - cache_before
    assert sorted(p.name for p in new) == sorted(p.name for p in files), new
    # and the app keeps serving
    text, _ = Client(server["url"], verbose=False).predict(_file(files[0]), 4, 0, api_name="/transcribe")
    assert text == expected[0].text
    print(f"16 concurrent /transcribe calls: {elapsed:.1f} s")


# --- UI helpers (the private events) -------------------------------------------------------------------------------


def test_downloads_are_written_to_gradio_cache_and_nothing_else(app, pipe, tmp_path, monkeypatch):
    import gradio as gr

    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with gradio_temp_dir(tmp_path / "cache"):
        block = gr.File()
    transcript = pipe.transcribe(speechlike(2.0), steps=3, seed=1)
    result = app.transcript_dict(transcript, steps=False)
    paths = app.write_downloads(result, "/somewhere/My talk (final).flac", block)
    assert [Path(p).name for p in paths] == ["My_talk_final_.txt", "My_talk_final_.srt", "My_talk_final_.vtt"]
    assert all(Path(p).is_relative_to(tmp_path / "cache") for p in paths)
    texts = [Path(p).read_text(encoding="utf-8") for p in paths]
    assert texts == [transcript.to_txt(), transcript.to_srt(), transcript.to_vtt()]
    assert list(private_tmp.iterdir()) == []
    assert app.write_downloads({"segments": [], "no_speech": True}, "x.wav", block) == []


def test_result_info_shows_timing_no_speech_and_random_warning(app):
    info = app.result_info(
        {
            "timings": {"audio_seconds": 3.5, "wall_seconds": 0.5, "rtfx": 7.0},
            "steps": 16,
            "seed": 2,
            "no_speech": True,
            "model": "tiny-random (random weights: ...)",
        }
    )
    assert "3.50 s" in info and "0.50 s" in info and "RTFx <b>7.0</b>" in info
    assert "No speech detected" in info and "noise" in info
    cards = app.compare_cards(
        {
            "seed": 1,
            "runs": [
                {
                    "steps": s,
                    "steps_run": s,
                    "text": f"<t{s}>",
                    "no_speech": False,
                    "timings": {"audio_seconds": 2.0, "wall_seconds": 0.1 * s, "rtfx": 20 / s},
                }
                for s in (4, 8)
            ],
        },
        highlight=8,
    )
    assert cards.count('class="cmp-card') == 2 and "&lt;t4&gt;" in cards and 'cmp-card mine" data-steps="8"' in cards


def test_gpu_duration_grows_with_audio_and_steps(app):
    short = app.gpu_seconds("m", np.zeros(10 * SR), [16])
    longer = app.gpu_seconds("m", np.zeros(600 * SR), [16])
    more_steps = app.gpu_seconds("m", np.zeros(10 * SR), [4, 8, 16, 32])
    assert 20 <= short < more_steps and short <= longer <= 300


# --- the model choice and the fallback ----------------------------------------------------------------------------


def test_model_comes_from_flag_then_env_then_default(app, monkeypatch):
    import asr

    monkeypatch.setenv("ASR_MODEL", "tiny-random")
    assert app.parse_args([]).model == "tiny-random"
    assert app.parse_args(["--model", "mini"]).model == "mini"
    monkeypatch.delenv("ASR_MODEL")
    assert app.parse_args([]).model == asr.DEFAULT_MODEL


@pytest.mark.parametrize("requested", ["no-such-model", "/nonexistent/adapter.pt"])
def test_unloadable_model_falls_back_to_the_small_model_and_says_why(app, requested, monkeypatch):
    monkeypatch.setenv("ASR_ALLOW_CPU", "1")  # reach asr.load's own error, not the app's no-GPU check
    state = app.load_model(requested)
    assert state.key == "mini" and state.is_fallback and state.error
    status = app.model_status(state)
    assert "Could not load" in status and "What to do" in status and "<code>mini</code> instead" in status
    assert "small model trained by this project" in status and "random weights" not in status


def test_the_fallback_list_goes_on_to_the_next_that_loads(app, monkeypatch):
    monkeypatch.setenv("ASR_ALLOW_CPU", "1")
    state = app.load_model("no-such-model", fallback="/nonexistent/small-model, tiny-random")
    assert state.key == "tiny-random" and "the fallback /nonexistent/small-model could not load either" in state.error
    assert "random weights, its transcripts are noise" in app.model_status(state)


def test_the_real_model_is_refused_at_once_without_a_gpu(app, monkeypatch):
    import torch

    import asr

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ASR_ALLOW_CPU", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # refused before any download is tried
    started = time.perf_counter()
    state = app.load_model(asr.DEFAULT_MODEL)
    assert time.perf_counter() - started < 10
    assert state.key == "mini" and "no CUDA GPU" in state.error
    assert "52 GB" in app.model_status(state) and "ASR_MODEL=mini" in app.what_to_do(state.error)


def test_every_load_error_gets_a_next_step(app):
    for reason in [
        "interfaze-ai/diffusion-gemma-asr-small is gated: accept its terms ... set HF_TOKEN",
        "not enough GPU memory for google/diffusiongemma-26B-A4B-it",
        "cannot reach the Hugging Face hub to download x and it is not in the local cache",
        "the small model 'mini' is not in this installation (asr/mini/model is missing)",
        "'x' is neither a local file/folder nor a hub id like 'owner/name'",
        "something unexpected",
    ]:
        assert len(app.what_to_do(reason)) > 30
    assert "HF_TOKEN" in app.what_to_do("repo is gated")
    assert "ASR_MODEL=mini" in app.what_to_do("not enough GPU memory")


def test_without_fallback_requests_get_the_load_error(app, tmp_path, monkeypatch):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    monkeypatch.setenv("ASR_ALLOW_CPU", "1")
    state = app.load_model("/nonexistent/adapter.pt", fallback="none")
    assert state.pipe is None and "No model is serving" in app.model_status(state)
    with gradio_temp_dir(tmp_path):
        demo = app.build_demo(state, max_audio_seconds=MAX_SECONDS)
        with serve(demo) as url:
            with pytest.raises(AppError, match="No model is loaded"):
                Client(url, verbose=False).predict(_file(example_files()[0]), 4, 0, api_name="/transcribe")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_app_py_starts_offline_with_the_tiny_model(tmp_path):
    """`python app.py --model tiny-random` starts with no network (the flag wins over ASR_MODEL)."""
    port = _free_port()
    env = {
        **os.environ,
        "ASR_MODEL": "interfaze-ai/diffusion-gemma-asr-small",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(tmp_path),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "no_proxy": "*",
    }
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny-random", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        config = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as r:
                    config = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert config is not None, f"app did not start: {proc.poll()=}"
        status = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "model-status"]
        assert status and "tiny-random" in status[0]["props"]["value"]
        assert "Could not load" not in status[0]["props"]["value"]
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Traceback" not in out, out


def test_the_api_snippet_shown_in_the_app_works(app, server):
    """The gradio_client example in the About tab runs as written (pointed at this server and an example clip)."""
    code = app.ABOUT.split("```python")[1].split("```")[0]
    code = code.replace('"owner/space-name"', repr(server["url"])).replace(
        '"speech.wav"', repr(str(example_files()[0]))
    )
    namespace: dict = {}
    exec(compile(code, "about-snippet", "exec"), namespace)  # noqa: S102 - our own documentation
    assert isinstance(namespace["text"], str) and namespace["result"]["steps"] == 16
    assert len(namespace["record"]["segments"][0]["steps"]) == 8
    assert [r["steps"] for r in namespace["runs"]["runs"]] == [4, 8, 16, 32]
