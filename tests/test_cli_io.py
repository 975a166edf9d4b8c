"""The command line run as a user runs it, in a subprocess: closed stdin or stdout, a reader that goes
away, a full disk, stdin that is not UTF-8, settings the API refuses, and Ctrl-C. Each ends with the
exit status of tinydg.cli's EXIT_ constants and, unless it ends quietly, one line on stderr, never a
traceback.

POSIX only: the cases use shell redirections, /dev/full, a pseudo-terminal and SIGINT.
"""

import os
import select
import shlex
import signal
import subprocess
import sys
import time

import pytest

from helpers import EMBEDDED, ROOT
from tinydg import cli

pytestmark = pytest.mark.skipif(os.name != "posix", reason="shell redirections, /dev/full, pty and SIGINT")

# UTF-8 stdin whatever the machine's locale; the tree under test first on the path
ENV = dict(os.environ, PYTHONUTF8="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
COMMAND = [sys.executable, "-m", "tinydg", "--weights", EMBEDDED, "--plain"]
PROMPT = "sort 3 1 2"  # the embedded model sorts digits; it answers in well under a second
TIMEOUT = 60


def default_ctrl_c():
    """In the child, before it runs: Ctrl-C as a terminal delivers it. A test run started in the
    background (`nohup ... &`) hands its children SIGINT ignored, and Python then never raises
    KeyboardInterrupt, so the Ctrl-C tests would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args, **kwargs):
    kwargs = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.Popen([*COMMAND, *args], cwd=ROOT, env=ENV, preexec_fn=default_ctrl_c, **kwargs)


def shell(redirections, *args):
    """The command with shell redirections (`>&-`, `<&-`): (status, stdout, stderr)."""
    line = " ".join(shlex.quote(a) for a in [*COMMAND, *args]) + " " + redirections
    done = subprocess.run(line, shell=True, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    return done.returncode, done.stdout, done.stderr


def assert_one_line(err, *words):
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("tinydg: "), err
    assert all(w in err for w in words), err


def read_until(fd, marker, timeout=TIMEOUT):
    """Bytes read from fd until marker has appeared."""
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {marker!r} within {timeout} s; got {seen[-300:]!r}"
        chunk = os.read(fd, 4096)
        assert chunk, f"end of output before {marker!r}; got {seen[-300:]!r}"
        seen += chunk
    return seen


# ---------------------------------------------------------------- stdout

def test_a_reader_that_goes_away_ends_the_command_quietly_with_141():
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails with EPIPE
    p = start(PROMPT, stdout=write_end)
    os.close(write_end)
    _, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == cli.EXIT_BROKEN_PIPE == 141
    assert err == b""  # no message, and no "Exception ignored ... BrokenPipeError" at exit


def test_closed_stdout_is_one_line_and_status_1():
    code, _, err = shell(">&-", PROMPT)
    assert code == cli.EXIT_IO
    assert_one_line(err, "stdout is closed")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_disk_is_one_line_and_status_1():
    code, _, err = shell("> /dev/full", PROMPT)
    assert code == cli.EXIT_IO
    assert_one_line(err, "stdout", "No space left")


# ---------------------------------------------------------------- stdin

def test_closed_stdin_is_not_needed_with_a_prompt():
    code, out, err = shell("<&-", PROMPT)
    assert (code, out.splitlines()[-1], err) == (0, "1 2 3", "")


@pytest.mark.parametrize("args", [[], ["--chat"]], ids=["prompt from stdin", "chat"])
def test_closed_stdin_without_a_prompt_is_one_line_and_status_2(args):
    code, _, err = shell("<&-", *args)
    assert code == cli.EXIT_USAGE
    assert_one_line(err, "stdin is closed")


def test_chat_answers_the_lines_before_one_that_is_not_utf8():
    p = start("--chat", stdin=subprocess.PIPE)
    out, err = p.communicate(b"sort 2 1\n\xff\xfe\nsort 4 3\n", timeout=TIMEOUT)
    assert p.returncode == cli.EXIT_IO
    assert out.decode().splitlines()[-1] == "1 2"  # the first turn, and only it
    assert_one_line(err.decode(), "stdin is not utf-8", "0xff")


# ---------------------------------------------------------------- settings the API refuses

@pytest.mark.parametrize("args, name", [
    (["--t-max", "inf"], "t_max"),
    (["--t-min", "nan"], "t_min"),
    (["--steps", "0"], "max_denoising_steps"),
    (["--max-new-tokens", "-5"], "max_new_tokens"),
    (["--max-new-tokens", str(10**15)], "max_new_tokens"),
    (["--stability-threshold", str(10**11)], "stability_threshold"),
    (["--seed", str(10**30)], "seed"),
])
def test_settings_the_api_refuses_are_one_line_and_status_2(args, name):
    p = start(*args, PROMPT)
    out, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == cli.EXIT_USAGE and out == b""
    assert_one_line(err.decode(), name)


def test_a_prompt_the_tokenizer_cannot_encode_is_one_line_and_status_2():
    p = start(os.fsdecode(b"sort \xff"))  # a byte that is not UTF-8 reaches argv as a lone surrogate
    _, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == cli.EXIT_USAGE
    assert_one_line(err.decode(), "surrogate")


# ---------------------------------------------------------------- Ctrl-C

def interrupt(p, stdin_data=None):
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(stdin_data, timeout=TIMEOUT)
    assert p.returncode == cli.EXIT_INTERRUPTED == 130
    assert_one_line(err.decode(), "interrupted")


def test_ctrl_c_while_the_chat_waits_for_a_line():
    p = start("--chat", stdin=subprocess.PIPE)
    p.stdin.write(b"sort 2 1\n")
    p.stdin.flush()
    read_until(p.stdout.fileno(), b"1 2\n")  # answered: now it waits for the next line
    interrupt(p)


def test_ctrl_c_during_generation_restores_the_terminal():
    # the live view draws every step on a terminal: once the first is drawn, the canvas is being denoised
    # (15 more steps to go: accept almost nothing per step, never stop early)
    pty = pytest.importorskip("pty")
    main_end, terminal = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "tinydg", "--weights", EMBEDDED, "--steps", "16",
                          "--entropy-bound", "1e-30", "--confidence-threshold", "1e-30", "--stability-threshold", "16",
                          PROMPT], cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE,
                         preexec_fn=default_ctrl_c)
    os.close(terminal)
    try:
        read_until(main_end, b"denoising step 1 of at most 16")
        p.send_signal(signal.SIGINT)
        shown = read_until(main_end, cli.SHOW_CURSOR.encode())  # the live view gave the cursor back
        _, err = p.communicate(timeout=TIMEOUT)
    finally:
        os.close(main_end)
    assert p.returncode == cli.EXIT_INTERRUPTED
    assert_one_line(err.decode(), "interrupted")
    assert b"1 2 3" not in shown


def test_ctrl_c_while_the_command_line_imports():
    # Ctrl-C lands while `python -m tinydg` imports tinydg.cli (here made to raise it, at a fixed moment)
    script = ("import importlib.abc, runpy, sys, tinydg\n"
              "class Interrupt(importlib.abc.MetaPathFinder):\n"
              "    def find_spec(self, name, path, target=None):\n"
              "        if name == 'tinydg.cli':\n"
              "            raise KeyboardInterrupt\n"
              "sys.meta_path.insert(0, Interrupt())\n"
              "runpy.run_module('tinydg', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", script, PROMPT], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == cli.EXIT_INTERRUPTED and done.stdout == ""
    assert_one_line(done.stderr, "interrupted")
