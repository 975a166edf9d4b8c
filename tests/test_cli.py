"""The command line on the random demo checkpoint (weights/demo): plain and live output, --stats, the
render function, a two-turn chat that reuses the KV cache, and the errors a user can cause.

No torch needed. `tinydg.generation.stream` (as tinydg.conversation, which runs each turn, imports it)
is wrapped to record what each turn asked for and got back. The turn logic itself (shared with
tinydg.Chat) is tested in tests/test_conversation.py.
"""

import io
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import assert_second_turn_is_the_full_history, record_turns
from tinydg import cli
from tinydg.chat_format import EMPTY_THOUGHT, format_prompt, parse_response
from tinydg.generation import Step
from tinydg.model import load
from tinydg.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "weights", "demo")
PROGRESS = re.compile(r"canvas (\d+)  denoising step (\d+) of at most (\d+)  accepted (\d+)/(\d+)  mean entropy (\d+\.\d\d)")
STATS = re.compile(r"stats: (\d+\.\d+) tokens/forward, (\d+\.\d) steps/canvas, (\d+\.\d) tok/s")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def calls(monkeypatch):
    """Every tinydg.generation.stream call the CLI's turns make: (model, input_ids, keyword arguments, Output)."""
    return record_turns(monkeypatch)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(DEMO)


def run(*argv, stdin=""):
    out = io.StringIO()
    return cli.main(["--weights", DEMO, *argv], stdin=io.StringIO(stdin), stdout=out), out.getvalue()


def test_plain_output_is_a_progress_line_per_canvas_then_the_answer(calls, tokenizer):
    code, text = run("--seed", "0", "Hello")
    assert code == 0
    assert not ANSI.search(text)  # not a terminal: plain text only
    (_, ids, _, out), = calls
    lines = text.splitlines()
    n = len(out.steps_per_canvas)
    progress = [PROGRESS.fullmatch(line) for line in lines[:n]]
    assert all(progress), lines[:n]
    assert [int(m[1]) for m in progress] == list(range(1, n + 1))
    assert [int(m[2]) for m in progress] == out.steps_per_canvas[:, 0].tolist()
    assert [int(m[3]) for m in progress] == [16] * n  # the checkpoint's max_denoising_steps
    assert [int(m[4]) for m in progress] == [int(a[-1, 0]) for a in out.accepted_per_step]
    assert [int(m[5]) for m in progress] == [32] * n  # the canvas length
    answer = parse_response(out.sequences[0, ids.shape[1]:], tokenizer).answer
    assert "\n".join(lines[n:]) == cli.visible(answer)


def test_stats_line_has_tokens_per_forward_steps_per_canvas_and_speed(calls):
    code, text = run("--seed", "1", "--stats", "--max-new-tokens", "32", "--steps", "5", "Hi")
    assert code == 0
    (_, _, _, out), = calls
    match = STATS.search(text.splitlines()[-1])
    assert match, text
    assert float(match[1]) == pytest.approx(float(out.tokens_per_forward[0]), abs=0.005)
    assert float(match[2]) == pytest.approx(float(out.steps_per_canvas[:, 0].mean()), abs=0.05)
    assert float(match[3]) > 0


def test_think_labels_both_channels():
    code, text = run("--seed", "2", "--think", "--max-new-tokens", "32", "--steps", "4", "Hi")
    assert code == 0
    assert re.search(r"^thought: .*\nanswer: ", text, re.M | re.S)


def test_render_step_marks_accepted_and_noise_and_shows_progress():
    accepted = np.array([[True, False, True, False]])
    step = Step(canvas_index=1, cur_step=14, temperature=0.7, draft=np.zeros((1, 4), int), accepted=accepted,
                entropy=np.array([[0.5, 1.0, 1.5, 2.0]], np.float32), canvas=np.zeros((1, 4), int),
                finished=np.zeros(1, bool))
    text = cli.render_step(step, ["ab", "cd", "ef", "gh"], max_steps=16, width=80)
    header, canvas = text.split("\n")
    assert header == "canvas 2  denoising step 3 of at most 16  accepted 2/4  mean entropy 1.25"
    assert canvas == f"{cli.BOLD}ab{cli.RESET}{cli.DIM}cd{cli.RESET}{cli.BOLD}ef{cli.RESET}{cli.DIM}gh{cli.RESET}"
    narrow = cli.render_step(step, ["ab", "cd", "ef", "gh"], max_steps=16, width=5)
    assert [ANSI.sub("", line) for line in narrow.split("\n")[1:]] == ["abcd", "efgh"]


def test_a_step_is_revealed_lowest_entropy_first():
    """The live view's frames within a step: the accepted positions in the sampler's order (lowest
    entropy first), the rest still showing the previous frame (a dim · before a canvas' first step)."""
    step = Step(canvas_index=0, cur_step=16, temperature=0.8, draft=np.zeros((1, 5), int),
                accepted=np.array([[True, True, False, True, True]]),
                entropy=np.array([[0.3, 0.1, 0.05, 0.2, 0.1]], np.float32), canvas=np.zeros((1, 5), int),
                finished=np.zeros(1, bool))
    assert cli.reveal_order(step).tolist() == [1, 4, 3, 0]  # position 2 (lowest entropy) was not accepted
    pieces, before = ["a", "b", "c", "d", "e"], ["v", "w", "x", "y", "z"]
    B, D, R = cli.BOLD, cli.DIM, cli.RESET
    two = cli.render_step(step, pieces, max_steps=16, shown=2, before=before)
    assert two.split("\n") == ["canvas 1  denoising step 1 of at most 16  accepted 2/5  mean entropy 0.15",
                               f"{D}v{R}{B}b{R}{D}x{R}{D}y{R}{B}e{R}"]
    first = cli.render_step(step, pieces, max_steps=16, shown=3)
    assert first.split("\n")[1] == f"{D}·{R}{B}b{R}{D}·{R}{B}d{R}{B}e{R}"
    # the whole step (the view's last frame): the same count, the renoised position's fresh noise
    assert cli.render_step(step, pieces, max_steps=16).split("\n") == [
        "canvas 1  denoising step 1 of at most 16  accepted 4/5  mean entropy 0.15", f"{B}a{R}{B}b{R}{D}c{R}{B}d{R}{B}e{R}"]


def test_tokens_cannot_drive_the_terminal(tokenizer):
    esc = tokenizer.token_to_id("<0x1B>")
    assert cli.token_text(tokenizer, esc) == "\u241b"
    assert cli.token_text(tokenizer, tokenizer.token_to_id("\n")) == "↵"
    assert cli.visible("a\x1b[2Jb\n") == "a\u241b[2Jb\n"


def test_live_view_redraws_the_canvas_in_place(calls):
    out = Terminal()
    code = cli.main(["--weights", DEMO, "--seed", "3", "--max-new-tokens", "32", "--steps", "4", "Hi"],
                    stdin=io.StringIO(), stdout=out)
    assert code == 0
    text = out.getvalue()
    assert text.startswith(cli.HIDE_CURSOR) and cli.SHOW_CURSOR in text
    assert text.count(cli.CLEAR_BELOW) >= 4  # one redraw per step
    assert cli.BOLD in text and cli.DIM in text
    assert PROGRESS.search(text)


@pytest.mark.parametrize("seed, stop", [(5, "<turn|>"), (2, "<|tool_response>"), (3, None)],
                         ids=["closed its turn", "other stop token", "length limit"])
def test_chat_reuses_the_cache_and_matches_the_full_history(calls, tokenizer, seed, stop):
    # 4 steps: the random demo model amplifies float32 rounding through self-conditioning (entropies
    # 1e-5 apart at step 1 differ by 1 at step 6), so only short runs can be compared token for token
    code, text = run("--chat", "--seed", str(seed), "--steps", "4", stdin="Hi\nHow are you?\n/quit\nnever read\n")
    assert code == 0
    assert len(calls) == 2
    (_, ids1, kw1, out1), (_, _, kw2, out2) = calls
    written = [tokenizer.id_to_token(int(t)) for t in out1.sequences[0, ids1.shape[1]:]]
    assert [t for t in written if t in ("<eos>", "<turn|>", "<|tool_response>")] == ([stop] if stop else [])
    assert kw2["seed"] == kw1["seed"] + 1

    # turn two sends only what the cache lacks, and gets the same cache and tokens as generating from
    # the whole history, encoded from scratch
    history, mask = assert_second_turn_is_the_full_history(tokenizer, *calls)

    # what the model sees is the full-history prompt, but for the empty thought channel pre-filled on turn one
    answer1 = parse_response(out1.sequences[0, ids1.shape[1]:], tokenizer).answer
    messages = [{"role": "user", "content": "Hi"}, {"role": "model", "content": answer1},
                {"role": "user", "content": "How are you?"}]
    expected = format_prompt(messages).replace("<|turn>model\n", "<|turn>model\n" + EMPTY_THOUGHT, 1)
    # (the format would also strip whitespace and thought channels from it; this seed's noise has neither)
    assert answer1 == answer1.strip() and "channel" not in answer1
    assert tokenizer.decode(history[mask]) == expected
    assert len(re.findall(PROGRESS, text)) == len(out1.steps_per_canvas) + len(out2.steps_per_canvas)


def test_a_missing_weights_folder_is_one_line_and_status_2(capsys, tmp_path, monkeypatch):
    code = cli.main(["--weights", str(tmp_path / "nowhere"), "Hi"], stdin=io.StringIO(), stdout=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nowhere" in err

    monkeypatch.setattr(cli, "ROOT", str(tmp_path))
    code = cli.main(["Hi"], stdin=io.StringIO(), stdout=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert os.path.join("weights", "embedded") in err and os.path.join("weights", "demo") in err
    assert "pip install -e ." in err  # an installed package without the repository: how to get the weights


@pytest.mark.parametrize("argv, stdin", [([""], ""), (["  \n"], ""), ([], " \n\n")])
def test_an_empty_prompt_is_refused_before_loading(capsys, monkeypatch, argv, stdin):
    """An empty prompt (argument or stdin) is one line and status 2, before any weights are opened; with
    the default weights the line says what the embedded model was trained for."""
    monkeypatch.setattr(cli, "load", lambda *a, **k: pytest.fail("loaded weights for an empty prompt"))
    code = cli.main(argv, stdin=io.StringIO(stdin), stdout=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "the prompt is empty" in err and "sort 2 to 12 digits" in err
    code = cli.main(["--weights", "weights/demo", ""], stdin=io.StringIO(), stdout=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and "the prompt is empty" in err and "sort" not in err


@pytest.mark.parametrize("argv, names", [(["--t-min", "2", "--t-max", "1"], "t_max"),
                                         (["--steps", "0"], "max_denoising_steps"),
                                         (["--entropy-bound", "-1"], "entropy_bound")])
def test_invalid_sampler_settings_are_one_line_and_status_2(capsys, calls, argv, names):
    code, text = run(*argv, "Hi")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and names in err and "Traceback" not in err
    assert text == "" and not calls


def test_default_weights_prefers_the_embedded_model(tmp_path):
    (tmp_path / "weights" / "demo").mkdir(parents=True)
    assert cli.default_weights(str(tmp_path)) == str(tmp_path / "weights" / "demo")
    (tmp_path / "weights" / "embedded").mkdir()
    assert cli.default_weights(str(tmp_path)) == str(tmp_path / "weights" / "embedded")
    assert load(cli.default_weights()).path in (os.path.join(ROOT, "weights", "embedded"), DEMO)


def test_module_help_runs():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "tinydg", "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tinydg") and "--chat" in done.stdout and "--entropy-bound" in done.stdout


def test_the_live_view_holds_each_step_for_the_pace(monkeypatch, calls):
    """--pace: every step stays on screen that long, in a frame per revealed share of its accepted
    positions (one wait before each frame but a canvas' first, and one before the canvas' line);
    --stats leaves the waiting out of the speed. The clock is faked: a wait moves it on at once."""
    waits, real, offset = [], time.perf_counter, [0.0]

    def sleep(seconds):
        waits.append(seconds)
        offset[0] += seconds

    monkeypatch.setattr(cli.time, "sleep", sleep)
    monkeypatch.setattr(cli.time, "perf_counter", lambda: real() + offset[0])
    out = Terminal()
    start = real()
    code = cli.main(["--weights", DEMO, "--seed", "0", "--pace", "5", "--stats", "Hello"], stdin=io.StringIO(""),
                    stdout=out)
    computing = real() - start
    (_, _, _, output), = calls
    frames = [max(1, min(cli.REVEAL_FRAMES, int(n))) for a in output.accepted_per_step for n in a[:, 0]]
    assert code == 0 and len(frames) == int(output.steps_per_canvas.sum()) and max(frames) > 1
    assert len(waits) == sum(frames)
    # each step is on screen for its computing time plus its waits, at least the pace: on a busy machine
    # a step may compute for seconds, so only the sum is bounded from below
    assert all(0 < w <= 5 for w in waits) and sum(waits) >= 5 * len(frames) - computing - 0.01
    seconds = float(re.search(r"tokens in (\d+\.\d+) s", out.getvalue()).group(1))
    assert seconds <= computing + 0.01


def test_plain_output_never_waits(monkeypatch):
    monkeypatch.setattr(cli.time, "sleep", lambda s: pytest.fail("a plain run waited"))
    assert run("--seed", "0", "--pace", "5", "Hello")[0] == 0


@pytest.mark.parametrize("pace", ["-1", "nan", "11"])
def test_a_pace_out_of_range_is_refused(pace, capsys):
    assert run("--pace", pace, "Hello")[0] == cli.EXIT_USAGE
    assert "--pace must be a number of seconds from 0 to 10.0" in capsys.readouterr().err
