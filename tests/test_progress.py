"""Progress bars in logs: a non-terminal gets a line every few seconds, not one per update."""

from __future__ import annotations

import io

from distillad.progress import bar


def test_a_log_file_gets_few_lines(monkeypatch):
    monkeypatch.setenv("DISTILLAD_PROGRESS_INTERVAL", "30")
    out = io.StringIO()  # not a terminal
    b = bar(total=2000, desc="train", file=out)
    for _ in range(2000):
        b.update(1)
    b.close()
    updates = [s for s in out.getvalue().replace("\n", "\r").split("\r") if s.strip()]
    assert 1 <= len(updates) <= 3, updates  # the start, maybe one throttled update, the end
    assert "2000/2000" in updates[-1]


def test_the_interval_follows_the_environment(monkeypatch):
    monkeypatch.setenv("DISTILLAD_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    b = bar(total=50, desc="x", file=out, miniters=1)
    for _ in range(50):
        b.update(1)
    b.close()
    assert len([s for s in out.getvalue().split("\r") if s.strip()]) > 10
