"""A closed output pipe (`tinyc ... | head`) ends every command quietly with SIGPIPE (the shell's
141), wherever the write happens: help text, a summary, a model file's own print. Real processes:
the reader's end is closed before the command writes anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.cli.test_cli import TINY_MODEL

PRINTS = "print('tracing the model')\n" + TINY_MODEL


@pytest.mark.parametrize("args", [["--help"], ["compile", "--help"], ["compile", "{model}", "-o", "{out}"],
                                  ["inspect", "{model}"]], ids=["help", "command-help", "model-prints", "inspect"])
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, args):
    (tmp_path / "prints.py").write_text(PRINTS)
    argv = [a.format(model=tmp_path / "prints.py", out=tmp_path / "p.ir") for a in args]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        proc = subprocess.run([sys.executable, "-m", "tinyc", *argv], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120, check=False)
    finally:
        os.close(write)
    assert proc.returncode == -signal.SIGPIPE, (proc.returncode, proc.stderr)  # the shell shows 141
    assert proc.stderr == ""
