"""The embedded model's task: sort a list of digits.

    user:  sort 7 2 9 2 4        model:  2 2 4 7 9<turn|>

A good first task for a diffusion language model: every answer position depends on the whole
prompt (how many of each digit came before it), and no position has to be written first, so the
canvas can settle in any order. Answers are checkable exactly.

Problems are split for good: a problem is held out when the CRC32 of its prompt text is 0 mod 10,
so no training batch ever contains a test problem (`training_problem` skips them).
"""

import zlib

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
