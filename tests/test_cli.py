"""The ``gpupart`` command line without a subcommand, and its argument errors.

A bare ``gpupart`` (or ``python -m gpupart``) prints the help to stdout and exits 0, as
``pip`` does and as ``gpupart --help`` does: asking what the tool can do is not an error. A
wrong subcommand is still argparse's usage error: a message on stderr and exit status 2.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpupart.cli import build_parser, main


def _console_script() -> str | None:
    here = Path(sys.executable).parent / "gpupart"
    return str(here) if here.exists() else shutil.which("gpupart")


def test_main_without_arguments_prints_help_and_returns_0(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out == build_parser().format_help()
    assert "run" in out
    assert err == ""


@pytest.mark.parametrize("how", ["python -m gpupart", "gpupart"])
def test_bare_command_prints_help_and_exits_0(how):
    if how == "gpupart":
        script = _console_script()
        if script is None:
            pytest.skip("the gpupart console script is not installed next to this Python")
        command = [script]
    else:
        command = [sys.executable, "-m", "gpupart"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: gpupart")
    assert "run a command as N ranks" in proc.stdout
    assert proc.stderr == ""


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bogus"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid choice: 'bogus'" in err
