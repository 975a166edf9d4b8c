"""The embedded model's task: sort a list of digits, and reverse the last answer.

    user:  sort 7 2 9 2 4        model:  2 2 4 7 9<turn|>
    user:  reverse it            model:  9 7 4 2 2<turn|>

A good first task for a diffusion language model: every answer position depends on the whole
prompt (how many of each digit came before it), and no position has to be written first, so the
canvas can settle in any order. Answers are checkable exactly. `reverse it` makes a conversation
need its history: the answer is in the KV cache, not in the new turn.

With thinking on, the model first writes a thought (chat_format: <|channel>thought\n...<channel|>):
for a sort, how many of each digit there are (a counting sort's table, `histogram`); for a reverse,
how many digits the answer has.

Problems are split for good: a problem is held out when the CRC32 of its prompt text is 0 mod 10,
so no training batch ever contains a test problem (`training_problem` skips them).
"""

import zlib
from dataclasses import dataclass

MIN_DIGITS, MAX_DIGITS = 2, 12


def prompt_text(digits):
    return "sort " + " ".join(str(d) for d in digits)


def answer_text(digits):
    return " ".join(str(d) for d in sorted(digits))


def is_held_out(digits) -> bool:
    return zlib.crc32(prompt_text(digits).encode()) % 10 == 0


def random_digits(rng, n=None):
    n = int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1)) if n is None else n
    return [int(d) for d in rng.integers(0, 10, size=n)]


def training_problem(rng, n=None):
    """A random problem outside the held-out set: a list of n digits (n random when None)."""
    while True:
        digits = random_digits(rng, n)
        if not is_held_out(digits):
            return digits


def test_problems(rng, count, lengths=range(4, MAX_DIGITS + 1)):
    """count distinct held-out problems, their lengths cycling through `lengths` (from 4 digits up:
    shorter lists have too few held-out problems to draw hundreds of distinct ones)."""
    lengths = list(lengths)
    seen, out = set(), []
    while len(out) < count:
        digits = random_digits(rng, lengths[len(out) % len(lengths)])
        if is_held_out(digits) and tuple(digits) not in seen:
            seen.add(tuple(digits))
            out.append(digits)
    return out


def parse_answer(text):
    """The model's answer text -> list of digits, or None when it is not a space-separated digit list."""
    parts = text.strip().split(" ")
    if not parts or not all(len(p) == 1 and p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def is_correct(digits, text) -> bool:
    return parse_answer(text) == sorted(digits)


# ---------------------------------------------------------------- conversations

REVERSE = "reverse it"             # the follow-up skill: reverse the model's previous answer
NOTHING_TO_REVERSE = "nothing to reverse"   # the answer to `reverse it` when no answer came before
TURN_WEIGHTS = (0.4, 0.3, 0.2, 0.1)  # how often a training conversation has 1, 2, 3, 4 user turns
SYSTEMS = ("You sort digits.", "You are a helpful assistant.", "Answer briefly.")  # system messages seen in training
COUNT_DIGITS = "0123456789abc"     # a count of 0..12 as one character


def histogram(digits):
    """The thought for `sort`: how many of each digit 0..9 there are, one character per digit
    (10, 11, 12 written a, b, c). It is a counting sort: the answer writes each digit that many times.
        [7, 2, 9, 2, 4] -> "0020100101"    (two 2s, one 4, one 7, one 9)"""
    return "".join(COUNT_DIGITS[list(digits).count(d)] for d in range(10))


@dataclass(frozen=True)
class Turn:
    """One exchange: what the user wrote, the thought the model should write (with thinking on) and
    its answer."""
    user: str
    thought: str
    answer: str


def sort_turn(digits):
    return Turn(prompt_text(digits), histogram(digits), answer_text(digits))


def reverse_turn(previous):
    """`reverse it` after an answer with the digits `previous` (None: no answer came before)."""
    if previous is None:
        return Turn(REVERSE, "no answer yet", NOTHING_TO_REVERSE)
    return Turn(REVERSE, f"{len(previous)} digits", " ".join(str(d) for d in reversed(previous)))


def conversation(rng, turns=None, problem=training_problem, p_reverse=0.5, p_reverse_first=0.05):
    """A list of Turns: `turns` of them, or 1..4 drawn with TURN_WEIGHTS. Each later turn is `reverse it` with
    probability p_reverse, else a new `sort`; a first turn is `reverse it` (nothing to reverse) with
    probability p_reverse_first. problem(rng) draws the digits of a `sort`: training_problem for
    training, a held-out one for tests."""
    count = 1 + int(rng.choice(len(TURN_WEIGHTS), p=TURN_WEIGHTS)) if turns is None else turns
    out, previous = [], None
    for i in range(count):
        if rng.random() < (p_reverse if i else p_reverse_first):
            out.append(reverse_turn(previous))
            previous = None if previous is None else previous[::-1]
        else:
            digits = problem(rng)
            out.append(sort_turn(digits))
            previous = sorted(digits)
    return out


def held_out_problem(rng, lengths=range(MIN_DIGITS, MAX_DIGITS + 1)):
    """A random held-out problem (is_held_out), its length drawn from lengths."""
    lengths = list(lengths)
    while True:
        digits = random_digits(rng, lengths[int(rng.integers(len(lengths)))])
        if is_held_out(digits):
            return digits
