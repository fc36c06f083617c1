"""The app in a real browser: Debian's Chromium driven by Playwright, against the app served in process on the tiny
random stack. Upload + Transcribe, the microphone (Chromium's fake capture device playing a WAV), the step
comparison and the denoising visualiser; a screenshot of each tab goes to test-output/browser/.

Skipped with the reason when chromium or playwright is missing, except with ASR_REQUIRE_BROWSER=1 (CI), where that
is a failure.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import soundfile as sf
from app_helpers import CHROMIUM_ARGS, EXAMPLES, ROOT, chromium_path, gradio_temp_dir, import_app, serve

SHOTS = ROOT / "test-output" / "browser"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    app = import_app()
    with gradio_temp_dir(tmp_path_factory.mktemp("gradio-cache")):
        demo = app.build_demo(app.load_model("tiny-random"), max_audio_seconds=60)
        with serve(demo) as address:
            yield address


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory):
    """An example clip as a 48 kHz int16 WAV (what a browser microphone usually gives), for the fake capture device."""
    from asr.audio import load_audio

    wave = load_audio(EXAMPLES / "quick_brown_fox.flac")
    wave48 = np.interp(np.arange(0, len(wave), 1 / 3), np.arange(len(wave)), wave)
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    sf.write(path, (wave48 * 0.8 * 32767).astype(np.int16), 48_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(mic_wav):
    executable = chromium_path()  # skips (or fails in CI) with the reason when there is no browser
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    args = CHROMIUM_ARGS + [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav}",
    ]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def _open_page(browser, address: str):
    """A page of the app at ``address``; JavaScript errors on it fail the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    context.grant_permissions(["microphone"])
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(address)
    pg.wait_for_selector("#upload-button")
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser, url):
    with _open_page(browser, url) as pg:
        yield pg


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _wait_for_text(page, selector: str) -> str:
    page.wait_for_function(f"() => (document.querySelector('{selector}')?.value || '').length > 0")
    return page.input_value(selector)


def _set_number(page, selector: str, value: int) -> None:
    box = page.locator(f"{selector} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def test_upload_an_example_and_transcribe(page):
    page.set_input_files("#upload-audio input[type=file]", str(EXAMPLES / "quick_brown_fox.flac"))
    page.wait_for_selector("#upload-audio audio, #upload-audio [data-testid='waveform-Audio file']", state="attached")
    page.click("#upload-button")
    text = _wait_for_text(page, "#upload-text textarea")
    assert text.strip()
    page.wait_for_selector("#upload-info .asr-timing")
    info = page.inner_text("#upload-info")
    assert "RTFx" in info and "3.94 s" in info and "random" in info.lower()
    # segments table and the three downloads
    page.wait_for_selector("#upload-files")
    downloads = page.inner_text("#upload-files").replace("\n", "")
    for name in ("quick_brown_fox.txt", "quick_brown_fox.srt", "quick_brown_fox.vtt"):
        assert name in downloads
    assert "0:00" in page.inner_text("#upload-segments")
    page.screenshot(path=str(SHOTS / "upload.png"), full_page=True)


def test_empty_click_is_refused_with_a_message(page):
    page.click("#upload-button")
    page.wait_for_selector("text=No audio yet")


def test_microphone_records_and_transcribes(page):
    _open_tab(page, "Microphone")
    audio = page.locator("#microphone-audio")
    audio.get_by_role("button", name="Record").first.click()
    page.wait_for_timeout(2500)  # the fake device plays the WAV into the recorder
    audio.locator("button.stop-button").first.click()
    page.wait_for_selector(
        "#microphone-audio [data-testid='waveform-Record'] button[aria-label='Play'], #microphone-audio audio",
        state="attached",
    )
    page.wait_for_timeout(500)
    page.click("#microphone-button")
    text = _wait_for_text(page, "#microphone-text textarea")
    assert text.strip()
    page.wait_for_selector("#microphone-info .asr-timing")
    info = page.inner_text("#microphone-info")
    seconds = float(info.split("audio")[1].split("s")[0])
    assert 1.5 < seconds < 6, info
    page.screenshot(path=str(SHOTS / "microphone.png"), full_page=True)


def test_steps_tab_compares_step_counts_side_by_side(page):
    _open_tab(page, "Steps")
    page.set_input_files("#steps-audio input[type=file]", str(EXAMPLES / "diffusion_steps.wav"))
    page.wait_for_timeout(500)
    page.click("#steps-button")
    page.wait_for_selector("#steps-cards .cmp-card >> nth=3")
    steps = [int(c.get_attribute("data-steps")) for c in page.locator("#steps-cards .cmp-card").all()]
    assert steps == [4, 8, 16, 32]
    assert page.locator("#steps-cards .cmp-card.mine").get_attribute("data-steps") == "16"
    assert all(" s" in t for t in page.locator("#steps-cards .cmp-time").all_inner_texts())
    page.screenshot(path=str(SHOTS / "steps.png"), full_page=True)


def _visualise(page, example: str, steps: int, frames: int) -> None:
    """Denoise ``example`` with ``steps`` steps in the visualiser tab and wait for a player of ``frames`` frames."""
    _open_tab(page, "Denoising visualiser")
    page.set_input_files("#vis-audio input[type=file]", str(EXAMPLES / example))
    _set_number(page, "#vis-steps", steps)
    page.wait_for_timeout(300)
    page.click("#vis-button")
    page.wait_for_selector(f"#vis-player .dv[data-frames='{frames}']")


def test_visualiser_replays_one_frame_per_step(page):
    _visualise(page, "weather_report.ogg", steps=6, frames=6)
    player = page.locator("#vis-player .dv")
    assert page.locator("#vis-player .dv-chart span").count() == 6
    assert page.locator("#vis-player .dv-scrub").get_attribute("max") == "5"
    canvas = page.locator("#vis-player .dv-canvas .tok").count()
    assert canvas == 16  # the tiny stack's canvas length: every position is shown
    # every token is marked accepted or re-noised and coloured by its confidence (a hue from red to green)
    marks = page.eval_on_selector_all(
        "#vis-player .dv-canvas .tok",
        "els => els.map(e => [e.classList.contains('acc') || e.classList.contains('ren'),"
        " e.style.getPropertyValue('--h')])",
    )
    assert all(marked and 8 <= int(hue) <= 138 for marked, hue in marks), marks
    # scrub to the first step, then step forward and jump to the end
    page.locator("#vis-player button[data-act='first']").click()
    assert page.inner_text("#vis-player .dv-label") == "Step 1 / 6"
    page.locator("#vis-player button[data-act='next']").click()
    assert player.get_attribute("data-frame") == "1"
    page.locator("#vis-player button[data-act='last']").click()
    assert page.inner_text("#vis-player .dv-label") == "Step 6 / 6"
    # the last frame's draft is the transcript shown above the player
    transcript = page.input_value("#vis-text textarea")
    assert page.inner_text("#vis-player .dv-draft").startswith("Transcript")
    assert transcript.strip() in page.inner_text("#vis-player .dv-draft")
    # play runs through the frames and stops on the last one
    page.locator("#vis-player button[data-act='first']").click()
    page.locator("#vis-player .dv-play").click()
    page.wait_for_function("() => document.querySelector('#vis-player .dv').dataset.frame === '5'", timeout=15_000)
    page.locator("#vis-player button[data-act='prev']").click()
    page.locator("#vis-player button[data-act='prev']").click()
    page.screenshot(path=str(SHOTS / "visualiser.png"), full_page=True)


def test_visualiser_ends_on_minis_joint_reading(browser, tmp_path):
    """mini reads its final canvas jointly with the CTC head: the player gets one frame more than the steps, showing
    that reading (the positions it changed marked) and the transcript; the last step is then a draft."""
    app = import_app()
    with gradio_temp_dir(tmp_path):
        demo = app.build_demo(app.load_model("mini"), max_audio_seconds=60)
        with serve(demo) as address, _open_page(browser, address) as page:
            _visualise(page, "quick_brown_fox.flac", steps=4, frames=5)
            assert page.locator("#vis-player .dv-chart span").count() == 5
            assert page.locator("#vis-player .dv-chart span.joint").count() == 1
            page.locator("#vis-player button[data-act='last']").click()
            assert page.inner_text("#vis-player .dv-label") == "Joint reading"
            assert "CTC head" in page.inner_text("#vis-player .dv-stats")
            transcript = page.input_value("#vis-text textarea")
            draft = page.inner_text("#vis-player .dv-draft")
            assert draft.startswith("Transcript") and transcript.strip() in draft
            changed = page.locator("#vis-player .dv-canvas .tok.chg").count()
            assert f"{changed} of " in page.inner_text("#vis-player .dv-stats")
            assert "words spelled from the model's lexicon" in page.inner_text("#vis-player .dv-stats")
            page.locator("#vis-player button[data-act='prev']").click()
            assert page.inner_text("#vis-player .dv-label") == "Step 4 / 4"
            assert page.inner_text("#vis-player .dv-draft").startswith("Draft after step 4")
            page.screenshot(path=str(SHOTS / "visualiser-joint.png"), full_page=True)


def test_about_tab_documents_the_api(page):
    _open_tab(page, "About")
    page.wait_for_selector("text=/transcribe_with_steps")
    page.screenshot(path=str(SHOTS / "about.png"), full_page=True)
