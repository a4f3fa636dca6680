"""The system Chromium for the browser tests (Debian's ``chromium``; nothing is downloaded), or a skip."""

from __future__ import annotations

import shutil

import pytest


def chromium() -> str:
    """Path of a Chromium on PATH; skips the test with the install command when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium found (apt-get install -y chromium); .ci/run installs it in CI")
