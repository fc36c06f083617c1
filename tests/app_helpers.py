"""Helpers shared by the app tests (test_app.py, test_browser.py): import app.py on the tiny random stack, serve a
demo in process, make audio files, and find a browser."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, speechlike  # noqa: F401 - re-exported for the app tests

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# app.py loads its model when imported: make that the tiny random stack, offline
os.environ["ASR_MODEL"] = "tiny-random"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def import_app():
    import app

    return app


@contextlib.contextmanager
def serve(demo):
    """Launch ``demo`` in this process (with the app's theme and CSS); yield its URL; close it afterwards."""
    app = import_app()
    _, url, _ = app.launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@contextlib.contextmanager
def gradio_temp_dir(path: Path):
    """Point Gradio's upload/output cache at ``path`` for demos built inside the block."""
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old


def write_audio(path: Path, samples: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    sf.write(str(path), samples, sr, subtype=subtype)
    return path


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix in {".wav", ".flac", ".ogg"})


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's Chromium, or skip (fail when ASR_REQUIRE_BROWSER=1, as in CI) with the reason."""
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    problem = None
    if path is None:
        problem = "Debian's chromium is not installed (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright Python package is not installed (pip install -r requirements-dev.txt)"
    if problem:
        if os.environ.get("ASR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests are required (ASR_REQUIRE_BROWSER=1) but {problem}")
        pytest.skip(f"browser tests skipped: {problem}")
    return path
