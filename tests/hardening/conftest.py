"""Hostile-user fixtures: a tiny finished run, a CLI runner that captures the one-line error, and a
folder fingerprint proving that a refused command changed nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distillad import api
from distillad.cli import main
from helpers.hardening import TINY  # tests/ is on sys.path

@pytest.fixture(scope="package")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hard") / "rd"
    api.train("rd", tiny_data, run, **TINY)
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy of the finished run, free to damage."""
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` → (exit code, stderr); fails the test on a traceback or a multi-line error."""
    def run(*argv: str) -> tuple[int, str]:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err, err
        if code != 0:
            assert err.count("\n") == 0 and ": error: " in err, err
        return code, err
    return run
