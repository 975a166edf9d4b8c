"""The command line: ask a checkpoint something and watch its canvas denoise.

    python -m tinydg "Why is the sky blue?"        one answer
    python -m tinydg --chat                        a conversation: one user turn per line, /quit ends
    python -m tinydg --think --stats --seed 0 "Hi"
    python -m tinydg --weights FOLDER --image cat.png "What is this?"   a checkpoint with a vision tower

On a terminal every denoising step redraws the current canvas in place: the tokens the sampler
accepted this step in bold, the others (fresh noise, redrawn every step) dimmed, each step shown at
least --pace seconds, its accepted tokens appearing in that time in the order the sampler ranks them,
lowest entropy first. Otherwise (a pipe, or --plain) it prints plain text: one progress line per
canvas, then the answer.

Letters: C canvas, T tokens of one call. The pieces, in the order the data flows:

    ids    = encode_prompt(tokenizer, messages)          tinydg.chat_format: the Gemma 4 prompt
    events = stream(model, ids, ...)                     tinydg.generation: a Step per step, a Canvas per canvas
    shown  = render_step(step, pieces, ...)              a pure function: one step -> text
    answer = parse_response(new tokens)                  tinydg.chat_format: thought channel and answer

Each turn is tinydg.conversation.take_turn, the code behind tinydg.Chat too: a conversation keeps
the KV cache between turns (`Output.cache` holds everything but the last canvas), so each turn
encodes only the last canvas and the new user turn, never the history.

A failure ends the command with one line on stderr and an exit status: 1 for stdin or stdout (closed,
not text, a full disk), 2 for an argument or setting tinydg refuses, 130 for Ctrl-C; a reader that
went away (`| head`) ends it quietly with 141. See the EXIT_ constants.
"""

import argparse
import math
import os
import re
import shutil
import sys
import time
import unicodedata

import numpy as np

from .conversation import EMPTY_PROMPT, Conversation, take_turn
from .errors import InputError, TinyDGError
from .generation import resolve_settings
from .image_prompt import soft_tokens_of
from .model import ROOT, load
from .model import default_checkpoint as default_weights  # noqa: F401  (the CLI's name for it)

BOLD, DIM, RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
REVEAL_FRAMES = 8  # frames per step in the live view: its accepted positions appear, lowest entropy first
HIDE_CURSOR, SHOW_CURSOR, CLEAR_BELOW = "\x1b[?25l", "\x1b[?25h", "\x1b[J"


# ---------------------------------------------------------------- what the screen shows (pure)

def visible(text, keep="\n\t"):
    """text with control characters made visible, so no decoded token can move the cursor or start
    an escape sequence: C0 controls become their control pictures (ESC -> ␛), others become �."""
    out = []
    for ch in text:
        if ch in keep or unicodedata.category(ch)[0] != "C":
            out.append(ch)
        elif ord(ch) < 32:
            out.append(chr(0x2400 + ord(ch)))
        else:
            out.append("\ufffd")
    return "".join(out)


def token_text(tokenizer, token_id):
    """One token as it appears in the live canvas: control tokens by name, newline as ↵, tab as ⇥."""
    return visible(tokenizer.decode([int(token_id)]).replace("\n", "↵").replace("\t", "⇥"), keep="")


def width_of(text):
    """Terminal columns of text without escape codes (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def progress_line(canvas_index, steps_done, max_steps, accepted_now, canvas_length, mean_entropy):
    """canvas 1  denoising step 5 of at most 16  accepted 3/64  mean entropy 2.31
    (a denoising step is one decoder forward over the canvas; the sampler may stop before the most;
    accepted: positions that kept their sampled token this step; every other one is renoised)"""
    return (f"canvas {canvas_index + 1}  denoising step {steps_done} of at most {max_steps}  "
            f"accepted {accepted_now}/{canvas_length}  mean entropy {mean_entropy:.2f}")


def reveal_order(step):
    """The positions row 0 accepted this step, lowest entropy first: the order in which the
    entropy-bound sampler takes them (the surest first, while their entropies stay under the bound)."""
    order = np.argsort(step.entropy[0], kind="stable")
    return order[step.accepted[0][order]]


def render_step(step, pieces, max_steps, width=80, shown=None, before=None):
    """One denoising step as text for the terminal: the progress line, then the canvas the decoder
    reads next, wrapped at `width` columns. pieces [C]: each position's `token_text`; accepted
    positions in bold, fresh noise dimmed. Row 0 of the batch.
    shown: draw only the first `shown` accepted positions of reveal_order (the progress line counts
    them); every other position keeps `before` [C], what the previous frame showed (None: a dim ·).
    None: the whole step."""
    accepted = step.accepted[0]
    if shown is not None:
        revealed = np.zeros_like(accepted)
        revealed[reveal_order(step)[:shown]] = True
        before = ["·"] * len(pieces) if before is None else before
        pieces = [p if r else b for p, r, b in zip(pieces, revealed, before)]
        accepted = revealed
    header = progress_line(step.canvas_index, max_steps - step.cur_step + 1, max_steps, int(accepted.sum()),
                           len(accepted), float(step.entropy[0].mean()))
    lines, line, used = [header[:width]], "", 0
    for text, kept in zip(pieces, accepted):
        if used and used + width_of(text) > width:
            lines.append(line)
            line, used = "", 0
        line += (BOLD if kept else DIM) + text + RESET
        used += width_of(text)
    return "\n".join(lines + [line])


def stats_line(out, prompt_length, pad_token_id, seconds):
    """tokens per forward, decoder forwards per canvas, new non-pad tokens per second of wall time."""
    new = int((out.sequences[0, prompt_length:] != pad_token_id).sum())
    return (f"stats: {float(out.tokens_per_forward[0]):.2f} tokens/forward, "
            f"{float(out.steps_per_canvas[:, 0].mean()):.1f} steps/canvas, "
            f"{new / seconds:.1f} tok/s ({new} tokens in {seconds:.2f} s)")


def format_answer(response, thinking):
    """The parsed response as printed: the answer; with thinking, both channels labelled."""
    if not thinking:
        return visible(response.answer)
    thought = "(none)" if response.thought is None else visible(response.thought)
    return f"thought: {thought}\nanswer: {visible(response.answer)}"


# ---------------------------------------------------------------- terminal output

class PlainView:
    """A progress line per committed canvas; nothing per step."""

    def __init__(self, stdout, tokenizer, max_steps, pace=0.0):
        self.stdout, self.max_steps = stdout, max_steps
        self.last = None
        self.paused = 0.0  # seconds this view waited for the reader (the live view's pace): not generation time

    def step(self, step):
        self.last = step

    def canvas(self, canvas):
        s = self.last
        self.stdout.write(progress_line(canvas.canvas_index, int(canvas.steps[0]), self.max_steps,
                                        int(s.accepted[0].sum()), s.accepted.shape[1],
                                        float(s.entropy[0].mean())) + "\n")
        self.stdout.flush()

    def close(self):
        pass


class LiveView(PlainView):
    """Redraws the current canvas in place after every step (ANSI: cursor up, clear below), and keeps
    each step on screen at least `pace` seconds, so that a reader sees the canvas settle even when the
    model takes milliseconds per step. Within that time the step's accepted positions appear in
    `frames` frames, lowest entropy first (reveal_order): a sure model accepts nearly all of a canvas
    in one step, and the order shows what it was surest of. pace 0: one frame per step, no waiting."""

    def __init__(self, stdout, tokenizer, max_steps, pace=0.0, frames=REVEAL_FRAMES):
        super().__init__(stdout, tokenizer, max_steps)
        self.tokenizer, self.lines, self.pace, self.frames = tokenizer, 0, pace, frames
        self.shown_at, self.hold = None, 0.0  # when the frame on screen was drawn; how long it stays
        self.before = None  # the pieces on screen after the last step of this canvas (None: none yet)
        self.width = max(20, shutil.get_terminal_size().columns - 1)
        stdout.write(HIDE_CURSOR)

    def _erase(self):
        if self.lines:
            self.stdout.write("\r" + (f"\x1b[{self.lines - 1}A" if self.lines > 1 else "") + CLEAR_BELOW)
        self.lines = 0

    def _hold(self):
        """Wait until the frame on screen has been shown its share of the pace."""
        if self.shown_at is not None:
            wait = self.hold - (time.perf_counter() - self.shown_at)
            if wait > 0:
                start = time.perf_counter()
                time.sleep(wait)
                self.paused += time.perf_counter() - start

    def _draw(self, text, hold):
        self._hold()
        self._erase()
        self.stdout.write(text)
        self.stdout.flush()
        self.lines = text.count("\n") + 1
        self.shown_at, self.hold = time.perf_counter(), hold

    def step(self, step):
        super().step(step)
        pieces = [token_text(self.tokenizer, t) for t in step.canvas[0]]
        accepted = int(step.accepted[0].sum())
        frames = max(1, min(self.frames, accepted)) if self.pace > 0 else 1
        for f in range(1, frames):  # the reveal; the last frame is the whole step
            self._draw(render_step(step, pieces, self.max_steps, self.width, shown=math.ceil(accepted * f / frames),
                                   before=self.before), self.pace / frames)
        self._draw(render_step(step, pieces, self.max_steps, self.width), self.pace / frames)
        self.before = pieces

    def canvas(self, canvas):
        self._hold()
        self._erase()
        self.shown_at, self.before = None, None
        super().canvas(canvas)

    def close(self):
        self._erase()
        self.stdout.write(SHOW_CURSOR)
        self.stdout.flush()


# ---------------------------------------------------------------- streams and exit statuses

EXIT_OK = 0
EMBEDDED_SKILLS = ("sort 2 to 12 digits (\"sort 7 2 9 2 4\"), then \"reverse it\" to reverse the last answer; "
                   "--think shows the digit counts first")  # what the default weights can answer
IMAGE_COMMAND = "/image"  # a --chat line "/image PATH" attaches the image at PATH to the next turn
DEFAULT_PACE = 0.4      # seconds the live view shows each denoising step, at least
MAX_PACE = 10.0
EXIT_IO = 1             # stdin could not be read or is not text; stdout is closed or could not be written
                        # (a full disk)
EXIT_USAGE = 2          # an argument or setting that tinydg refuses (argparse's status for its own refusals)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, what a shell reports for a program that SIGINT ended
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (`| head`): 128 + SIGPIPE, what a shell reports for a
                        # program that SIGPIPE ended; like such a program the command ends quietly


class StreamError(Exception):
    """stdin or stdout failed; the message says which and why."""


class Writer:
    """stdout as the command writes to it: a failed write (a full disk, a closed descriptor) is a
    StreamError naming stdout. A reader that went away stays a BrokenPipeError: main ends quietly."""

    def __init__(self, stream):
        self.stream = stream

    def isatty(self):
        return self.stream.isatty()

    def write(self, text):
        self._do(self.stream.write, text)

    def flush(self):
        self._do(self.stream.flush)

    @staticmethod
    def _do(operation, *args):
        try:
            operation(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise StreamError(f"cannot write to stdout: {e.strerror or e}") from None


# What the surrogateescape error handler makes of a byte that does not decode: U+DC80..U+DCFF.
UNDECODED = re.compile("[\udc80-\udcff]")


def read_stdin(stdin, whole=False):
    """stdin.readline() (or read()): a read that fails, or bytes that do not decode, are a StreamError
    naming stdin. run() reads sys.stdin with errors="surrogateescape", so that the lines before a bad
    one still decode and the bad byte is found here."""
    try:
        text = stdin.read() if whole else stdin.readline()
    except OSError as e:
        raise StreamError(f"cannot read stdin: {e.strerror or e}") from None
    except UnicodeDecodeError as e:  # a stream that decodes strictly
        raise StreamError(f"stdin is not {e.encoding} text ({e.reason})") from None
    undecoded = UNDECODED.search(text)
    if undecoded:
        encoding = getattr(stdin, "encoding", None) or "utf-8"
        raise StreamError(f"stdin is not {encoding} text (byte 0x{ord(undecoded.group()) - 0xDC00:02x})")
    return text


def fail(message, status):
    """Print message as one line on stderr, when there is a stderr to print to; return status."""
    if sys.stderr is not None:  # print(file=None) would print to stdout
        try:
            print(message.replace("\n", " "), file=sys.stderr, flush=True)
        except (OSError, ValueError):  # a closed or broken stderr: nowhere to say it
            pass
    return status


def end_line(stdout):
    """On a terminal, end the line that Ctrl-C left open (the "> " prompt), so stderr's line starts afresh."""
    try:
        if stdout is not None and stdout.isatty():
            stdout.write("\n")
            stdout.flush()
    except (OSError, ValueError):
        pass


def silence(stdout):
    """Point stdout's descriptor at os.devnull, as the Python docs advise for SIGPIPE: the interpreter
    flushes stdout once more at exit, and that flush, failing again, would print "Exception ignored"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # no descriptor (a StringIO, a closed stdout)
        pass


# ---------------------------------------------------------------- the command

def parser():
    p = argparse.ArgumentParser(prog="tinydg", description="Generate text with a DiffusionGemma checkpoint, "
                                "showing the canvas as it denoises.")
    p.add_argument("prompt", nargs="?", help="the user turn (default: stdin, when it is not a terminal)")
    p.add_argument("--weights", metavar="FOLDER", help="checkpoint folder (default: weights/embedded, a tiny "
                   f"model trained to {EMBEDDED_SKILLS}; else weights/demo)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed; turn n of a chat uses seed + n "
                   "(default: random)")
    p.add_argument("--think", action="store_true", help="thinking mode: the model may write a thought channel")
    p.add_argument("--chat", action="store_true", help="read one user turn per line from stdin until EOF or "
                   "/quit, keeping the KV cache between turns")
    p.add_argument("--image", action="append", metavar="PATH", help="an image for the first turn (repeatable; "
                   "needs a checkpoint with a vision tower): one per <|image|> in the prompt, else all in front of "
                   f"it. In --chat, a line `{IMAGE_COMMAND} PATH` attaches an image to the next turn")
    p.add_argument("--stats", action="store_true", help="after each answer: tokens per forward, steps per "
                   "canvas, tokens per second")
    p.add_argument("--plain", action="store_true", help="plain text even on a terminal")
    p.add_argument("--pace", type=float, default=DEFAULT_PACE, metavar="SECONDS",
                   help="on a terminal, show each denoising step at least SECONDS so the canvas can be seen "
                        "settling, its accepted tokens appearing lowest entropy first "
                        f"(default {DEFAULT_PACE}; 0: as fast as the model goes). --stats leaves the wait out")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="numpy (CPU, default) or cupy (a CUDA GPU, needs tinydg[gpu])")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float8"), default=None,
                   help="weights: float32 (default), bfloat16 (cupy only), or float8 experts (e4m3 with a scale "
                        "per row; on cupy the rest in bf16)")
    p.add_argument("--weight-cache-gb", type=float, metavar="GB",
                   help="numpy backend: keep the first GB gigabytes (10^9 bytes) of weights converted to float32 "
                        "and convert the others again from the checkpoint at each use, trading speed for RAM. 0 "
                        "keeps none: the process holds only the weights in use instead of all of them in float32 "
                        "(twice the bf16 checkpoint), and each step takes several times longer (default: keep all)")
    g = p.add_argument_group("sampler (default: the checkpoint's generation_config.json)")
    g.add_argument("--max-new-tokens", type=int, metavar="N", help="rounded up to whole canvases")
    g.add_argument("--steps", type=int, dest="max_denoising_steps", metavar="N",
                   help="max denoising steps per canvas")
    g.add_argument("--entropy-bound", type=float, metavar="H", help="accept the lowest-entropy tokens while "
                   "the entropies before each sum to at most H")
    g.add_argument("--t-min", type=float, metavar="T", help="temperature at the last step")
    g.add_argument("--t-max", type=float, metavar="T", help="temperature at the first step")
    g.add_argument("--stability-threshold", type=int, metavar="N",
                   help="stop a canvas once its draft is unchanged for N steps ...")
    g.add_argument("--confidence-threshold", type=float, metavar="H", help="... and its mean entropy is below H")
    return p


SAMPLER_OPTIONS = ("max_new_tokens", "max_denoising_steps", "entropy_bound", "t_min", "t_max",
                   "stability_threshold", "confidence_threshold")


def gigabytes_to_bytes(gb):
    """--weight-cache-gb as load's weight_cache_bytes: None stays None (keep every weight)."""
    if gb is None:
        return None
    if not (math.isfinite(gb) and gb >= 0):
        raise InputError(f"--weight-cache-gb must be a number of gigabytes >= 0, got {gb}")
    return int(gb * 1e9)


def user_turns(args, stdin, stdout, interactive, attach):
    """(text, image paths) per turn: the prompt, then (with --chat) one line of stdin per turn until
    EOF or /quit. --image paths go with the first turn; a line `/image PATH` attaches one to the next
    turn, once attach(PATH, "/image") (which returns its soft-token count) accepts it: a refusal is reported on
    stderr and the chat goes on. A closed stdin (None) holds no turns."""
    images = list(args.image or [])
    if args.prompt is not None:
        yield args.prompt, images
        images = []
    if not args.chat or stdin is None:
        return
    while True:
        if interactive:
            stdout.write("> ")
            stdout.flush()
        line = read_stdin(stdin)
        if not line or line.strip() == "/quit":
            return
        line = line.strip()
        if line.split(maxsplit=1)[:1] == [IMAGE_COMMAND]:
            path = line[len(IMAGE_COMMAND):].strip()
            try:
                tokens = attach(path, IMAGE_COMMAND)
            except InputError as e:
                sys.stderr.write(f"tinydg: {e}\n")
                continue
            images.append(path)
            stdout.write(f"(image {visible(path)} attached to the next turn: {tokens} soft tokens)\n")
        elif line:
            yield line, images
            images = []


def image_checker(model, default):
    """attach(path, source) -> the soft tokens the image at path becomes, or an InputError naming source
    (--image or /image) and the file: it must be an image that this checkpoint can read (default: the
    checkpoint is the default one)."""
    def attach(path, source):
        if not path:
            raise InputError(f"{IMAGE_COMMAND} needs a path: {IMAGE_COMMAND} PATH")
        if default:
            raise InputError(f"the default model reads no images (it was trained to {EMBEDDED_SKILLS}); give "
                             "--weights a checkpoint with a vision tower")
        return soft_tokens_of(model, path, source)
    return attach


def run(argv, stdin, stdout):
    """The command's work (main handles its failures). stdin or stdout is None when it is closed."""
    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return e.code
    if stdout is None:
        raise StreamError("stdout is closed: nowhere to write the answer")
    if args.prompt is None and (stdin is None or (not args.chat and stdin.isatty())):
        if stdin is not None:
            p.print_usage(sys.stderr)
        raise InputError("give a prompt as an argument (stdin is closed)" if stdin is None
                         else "give a prompt, or --chat for a conversation")
    if stdin is sys.stdin and hasattr(stdin, "reconfigure"):
        stdin.reconfigure(errors="surrogateescape")  # see read_stdin
    if args.prompt is None and not args.chat:
        args.prompt = read_stdin(stdin, whole=True)
    if args.prompt is not None and not args.prompt.strip():
        raise InputError(EMPTY_PROMPT + (
            f" (the embedded model was trained for: {EMBEDDED_SKILLS})" if args.weights is None else ""))
    live = stdout.isatty() and not args.plain
    if stdout is sys.stdout and hasattr(stdout, "reconfigure"):
        stdout.reconfigure(errors="replace")  # a character the terminal's encoding lacks prints as ?
    out = Writer(stdout)
    model = load(args.weights or default_weights(ROOT), backend=args.backend, dtype=args.dtype,
                 weight_cache_bytes=gigabytes_to_bytes(args.weight_cache_gb))
    tokenizer = model.tokenizer
    settings = {k: getattr(args, k) for k in SAMPLER_OPTIONS}
    g = resolve_settings(model, **settings)  # bad settings fail here, before any input is read
    if not (math.isfinite(args.pace) and 0 <= args.pace <= MAX_PACE):
        raise InputError(f"--pace must be a number of seconds from 0 to {MAX_PACE}, got {args.pace}")
    seed = int(np.random.SeedSequence().entropy % 2**32) if args.seed is None else args.seed
    attach = image_checker(model, default=args.weights is None)
    for path in args.image or []:
        attach(path, "--image")  # a bad --image fails before any turn
    conv = Conversation(thinking=args.think)
    interactive = stdin is not None and stdin.isatty()
    for turn, (text, images) in enumerate(user_turns(args, stdin, out, interactive, attach)):
        view = (LiveView if live else PlainView)(out, tokenizer, g.max_denoising_steps, args.pace)
        response, output, T, seconds = take_turn(model, tokenizer, conv, text, view, seed + turn, settings,
                                                 images or None)
        seconds -= view.paused
        out.write(format_answer(response, args.think) + "\n")
        if args.stats:
            out.write(stats_line(output, T, g.pad_token_id, seconds) + "\n")
        out.flush()
    return EXIT_OK


def main(argv=None, stdin=None, stdout=None) -> int:
    """Run the command; returns its exit status (the EXIT_ constants). Whatever a user can cause (a
    setting tinydg refuses, a closed or failing stdin or stdout, Ctrl-C at any moment) ends in one line
    on stderr, never a traceback; a reader that went away (`| head`) ends it quietly."""
    stdin = sys.stdin if stdin is None else stdin  # sys.stdin and sys.stdout are None when closed
    stdout = sys.stdout if stdout is None else stdout
    try:
        status = run(argv, stdin, stdout)
        if stdout is not None:
            Writer(stdout).flush()  # so a failure to write the last of it is reported here
        return status
    except TinyDGError as e:
        return fail(f"tinydg: {e}", EXIT_USAGE)
    except BrokenPipeError:
        silence(stdout)
        return EXIT_BROKEN_PIPE
    except (StreamError, OSError) as e:  # OSError: a file the loaders read failed in a way they do not name
        silence(stdout)
        return fail(f"tinydg: {e}", EXIT_IO)
    except KeyboardInterrupt:
        end_line(stdout)
        return fail("tinydg: interrupted", EXIT_INTERRUPTED)
