"""Evaluate the embedded model on held-out problems and conversations: the numbers in
weights/embedded/EVAL.md and the README.

    python -m tinydg.tools.embedded.evaluate              tinydg, the checkpoint's sampler settings (NumPy only)
    python -m tinydg.tools.embedded.evaluate --reference  also transformers' generate, through the same turns (torch)
    python -m tinydg.tools.embedded.evaluate --sweep      first turns against max_denoising_steps, and the
                                                          left-to-right baseline; writes the plots (matplotlib)
    python -m tinydg.tools.embedded.evaluate --float8     first turns also with the experts in float8
    python -m tinydg.tools.embedded.evaluate --bounds     first turns and follow-ups against the entropy bound

What is measured, with thinking off and on:
- first turns: `task.test_problems(default_rng(2026), N)` (4 to 12 digits), each a new tinydg.Chat;
- follow-up turns: conversations of 2 to 4 turns (`task.conversation(default_rng(2027), ...)`, held-out
  sorts, no `reverse it` first), sent turn by turn through one tinydg.Chat, which keeps the KV cache
  as the command line does; every turn after the first is scored, `sort` and `reverse it` apart.
A turn is solved when its answer is exactly the expected one given the correct history (a wrong
earlier answer makes a `reverse it` after it count as wrong too). With thinking on, a turn also
counts its thought: non-empty, and correct (the digit counts of a sort, the length for a reverse).
Seeds: conversation i sends turn j with seed 1000 + 10 * i + j; transformers gets the same number
through torch.manual_seed, and tinydg on NumPy reproduces torch's generator from a seed, so the two
should write the same answers: the report gives the fraction that agree.
"""

import argparse
import json
import os
import platform
import time

import numpy as np

import tinydg
from tinydg.chat_format import TURN_CLOSE, parse_response
from tinydg.conversation import Conversation, ids_to_mask, next_input
from tinydg.generation import resolve_settings
from tinydg.model import denoise, encode
from tinydg.tools.embedded import task

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))  # the repository root
FOLDER = os.path.join(ROOT, "weights", "embedded")
PROBLEM_SEED, CONVERSATION_SEED = 2026, 2027
STEP_SWEEP = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
BOUND_SWEEP = (0.1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)  # entropy bounds (0.1: the reference's default)
KINDS = ("first", "sort", "reverse")  # first turns; follow-up `sort` turns; follow-up `reverse it` turns


def first_turns(problems):
    return [[task.sort_turn(digits)] for digits in problems]


def follow_ups(count, rng_seed=CONVERSATION_SEED):
    rng = np.random.default_rng(rng_seed)
    return [task.conversation(rng, turns=2 + i % 3, problem=task.held_out_problem, p_reverse_first=0.0)
            for i in range(count)]


def kind_of(j, turn):
    return "first" if j == 0 else ("reverse" if turn.user == task.REVERSE else "sort")


def scored(turn, reply_text, thought, tokens_per_forward, forwards_per_canvas, thinking):
    row = {"answer": reply_text, "solved": reply_text == turn.answer, "digits": len(task.parse_answer(turn.answer) or []),
           "tokens_per_forward": float(tokens_per_forward)}
    if forwards_per_canvas is not None:  # None: not reported (transformers' generate does not count them)
        row["forwards_per_canvas"] = float(forwards_per_canvas)
    if thinking:
        row["thought"] = bool(thought.strip())
        row["thought_correct"] = thought == turn.thought
    return row


def run_tinydg(model, conversations, thinking, score_first=True, **settings):
    """{kind: [row per scored turn]}: each conversation through one tinydg.Chat."""
    rows = {k: [] for k in KINDS}
    for i, conversation in enumerate(conversations):
        session = tinydg.Chat(model, think=thinking)
        for j, turn in enumerate(conversation):
            reply = session.send(turn.user, seed=1000 + 10 * i + j, **settings)
            if j or score_first:
                out = reply.output
                rows[kind_of(j, turn)].append(scored(turn, reply.text, reply.thought, out.tokens_per_forward[0],
                                                     out.steps_per_canvas[:, 0].mean(), thinking))
    return rows


def run_reference(torch_model, tokenizer, model, conversations, thinking, score_first=True):
    """The same turns through transformers' generate: each turn continues the reference's own cache
    (past_key_values) with the tokens tinydg's next_input makes, its attention mask over cache and
    new tokens."""
    from tinydg.tools.reference_generate import run_generate
    C = model.config.canvas_length
    masked = ids_to_mask(tokenizer, resolve_settings(model))
    rows = {k: [] for k in KINDS}
    for i, conversation in enumerate(conversations):
        conv, cache, seen = Conversation(thinking=thinking), None, np.zeros(0, dtype=bool)
        for j, turn in enumerate(conversation):
            ids, valid = next_input(tokenizer, conv, turn.user)
            seen = np.concatenate([seen, valid])
            out, _ = run_generate(torch_model, ids[None], 1000 + 10 * i + j, attention_mask=seen[None],
                                  past_key_values=cache)
            new = out["sequences"][0, len(ids):]
            response = parse_response(new, tokenizer)
            if j or score_first:
                rows[kind_of(j, turn)].append(scored(turn, response.answer, response.thought or "",
                                                     out["tokens_per_forward"][0], None, thinking))
            conv.messages += [{"role": "user", "content": turn.user}, {"role": "model", "content": response.answer}]
            conv.cache, conv.last_canvas, conv.masked_ids = "cached", new[-C:], masked
            conv.closed = tokenizer.token_to_id(TURN_CLOSE) in new
            cache, seen = out["past_key_values"], np.concatenate([seen, np.ones(len(new) - C, dtype=bool)])
    return rows


def summary(rows):
    """{kind: {turns, accuracy, tokens_per_forward, forwards_per_canvas[, thought, thought_correct]}}"""
    out = {}
    for kind, kind_rows in rows.items():
        if kind_rows:
            out[kind] = {"turns": len(kind_rows), **{key: float(np.mean([r[key] for r in kind_rows]))
                                                    for key in kind_rows[0] if key not in ("answer", "solved", "digits")},
                         "accuracy": float(np.mean([r["solved"] for r in kind_rows]))}
    return out


def by_length(rows):
    """{kind: {digits: [solved, turns]}}: exact matches by the length of the expected answer."""
    out = {}
    for kind, kind_rows in rows.items():
        counts = out.setdefault(kind, {})
        for r in kind_rows:
            solved_turns = counts.setdefault(str(r["digits"]), [0, 0])
            solved_turns[0] += int(r["solved"])
            solved_turns[1] += 1
    return out


def evaluate(model, problems, conversations, thinking, **settings):
    """{kind: rows}: the first turns of `problems` and the follow-ups of `conversations`, through tinydg."""
    rows = run_tinydg(model, first_turns(problems), thinking, **settings)
    more = run_tinydg(model, conversations, thinking, score_first=False, **settings)
    return {k: rows[k] + more[k] for k in KINDS}


def agreement(ours, theirs):
    """The fraction of scored turns where the two runs wrote the same answer."""
    pairs = [(a["answer"], b["answer"]) for k in KINDS for a, b in zip(ours[k], theirs[k], strict=True)]
    return float(np.mean([a == b for a, b in pairs]))


def left_to_right(model, tokenizer, problems, seed=0):
    """The baseline: the same model fills the canvas one position per forward, left to right, taking
    the argmax there (self-conditioned on the previous forward); the rest of the canvas stays noise.
    Stops at <turn|> or <eos>. Thinking off; tokens per forward is 1 by construction."""
    from tinydg.chat_format import encode_prompt
    stops = {tokenizer.token_to_id("<turn|>"), tokenizer.token_to_id("<eos>")}
    C, V = model.config.canvas_length, model.text.vocab_size
    rng = np.random.default_rng(seed)
    solved, forwards = [], []
    for digits in problems:
        ids = np.array([encode_prompt(tokenizer, [{"role": "user", "content": task.prompt_text(digits)}])])
        _, cache = encode(model, ids)
        canvas = rng.integers(0, V, size=(1, C))
        sc, used = None, 0
        for pos in range(C):
            logits = denoise(model, canvas, cache, sc)
            sc = logits
            canvas[0, pos] = logits[0, pos].argmax()
            used += 1
            if canvas[0, pos] in stops:
                break
        answer = parse_response(tokenizer.decode([int(t) for t in canvas[0]])).answer
        solved.append(answer == task.answer_text(digits))
        forwards.append(used)
    return {"turns": len(problems), "accuracy": float(np.mean(solved)), "tokens_per_forward": 1.0,
            "forwards_per_canvas": float(np.mean(forwards))}


def sweep(model, problems):
    rows = []
    for n in STEP_SWEEP:
        first = summary(run_tinydg(model, first_turns(problems), False, max_denoising_steps=n))["first"]
        rows.append({"max_denoising_steps": n, **first})
        print(rows[-1], flush=True)
    return rows


def bound_sweep(model, problems, conversations):
    """Thinking off, for each entropy bound: exact match on first turns, follow-up sorts and reverses;
    tokens per forward and forwards per canvas on first turns (how many steps the live view shows)."""
    rows = []
    for bound in BOUND_SWEEP:
        found = summary(evaluate(model, problems, conversations, False, entropy_bound=bound))
        rows.append({"entropy_bound": bound, **{f"{kind}_accuracy": found[kind]["accuracy"] for kind in KINDS},
                     "tokens_per_forward": found["first"]["tokens_per_forward"],
                     "forwards_per_canvas": found["first"]["forwards_per_canvas"]})
        print(rows[-1], flush=True)
    return rows


def plots(folder, rows, baseline):
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(os.path.join(folder, "training_log.csv")) as f:
        log = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [int(r["step"]) for r in log]
    ax.plot(steps, [float(r["diffusion_loss"]) for r in log], label="diffusion (canvas cross-entropy)")
    ax.plot(steps, [float(r["encoder_loss"]) for r in log], label="encoder next-token")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title("Embedded model: training curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "training_curve.png"), dpi=80)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    n = [r["max_denoising_steps"] for r in rows]
    for ax, key, label in zip(axes, ("accuracy", "tokens_per_forward", "forwards_per_canvas"),
                              ("exact match (first turns)", "tokens per forward", "forwards per canvas")):
        ax.plot(n, [r[key] for r in rows], "o-", label="entropy-bound sampler")
        ax.axhline(baseline[key], color="gray", ls="--", label="left to right, 1 token/forward")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("max denoising steps")
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "denoising_steps.png"), dpi=80)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", default=FOLDER)
    p.add_argument("--problems", type=int, default=300, help="first-turn problems (default 300)")
    p.add_argument("--conversations", type=int, default=300, help="conversations of 2 to 4 turns (default 300)")
    p.add_argument("--reference", action="store_true")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--float8", action="store_true", help="first turns also with the experts in float8")
    p.add_argument("--bounds", action="store_true", help="first turns and follow-ups against the entropy bound")
    args = p.parse_args()
    model = tinydg.load(args.folder)
    problems = task.test_problems(np.random.default_rng(PROBLEM_SEED), args.problems)
    conversations = follow_ups(args.conversations)
    results = {"problems": args.problems, "conversations": args.conversations}
    ours = {}
    for thinking in (False, True):
        start = time.time()
        ours[thinking] = evaluate(model, problems, conversations, thinking)
        results[f"tinydg_think_{thinking}"] = summary(ours[thinking])
        results[f"tinydg_by_length_think_{thinking}"] = by_length(ours[thinking])
        print("tinydg", "thinking" if thinking else "", results[f"tinydg_think_{thinking}"],
              f"{time.time() - start:.0f} s", flush=True)
    if args.float8:
        fp8 = tinydg.load(args.folder, dtype="float8")
        results["tinydg_float8"] = summary(run_tinydg(fp8, first_turns(problems), False))
        print("tinydg float8", results["tinydg_float8"], flush=True)
    if args.reference:
        from tinydg.tools.reference import load_float32
        torch_model = load_float32(args.folder, attn_implementation="sdpa")
        for thinking in (False, True):
            rows = run_reference(torch_model, model.tokenizer, model, first_turns(problems), thinking)
            more = run_reference(torch_model, model.tokenizer, model, conversations, thinking, score_first=False)
            theirs = {k: rows[k] + more[k] for k in KINDS}
            results[f"reference_think_{thinking}"] = summary(theirs)
            results[f"same_answers_think_{thinking}"] = agreement(ours[thinking], theirs)
            print("reference", "thinking" if thinking else "", results[f"reference_think_{thinking}"], flush=True)
    if args.sweep:
        results["sweep"] = sweep(model, problems)
        results["left_to_right"] = left_to_right(model, model.tokenizer, problems)
        print("left to right", results["left_to_right"], flush=True)
        plots(args.folder, results["sweep"], results["left_to_right"])
    if args.bounds:
        results["bounds"] = bound_sweep(model, problems, conversations)
    with open(os.path.join(args.folder, "eval.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.folder, "EVAL.md"), "w") as f:
        f.write(report(results))


KIND_NAMES = {"first": "first turns", "sort": "follow-up `sort`", "reverse": "follow-up `reverse it`"}


def table(results):
    """The main table: one row per generator, thinking mode and kind of turn."""
    lines = ["| generator | thinking | turns | kind | exact match | thought written / correct | tokens per forward "
             "| forwards per canvas |", "|---|---|---|---|---|---|---|---|"]
    for name, label in (("tinydg", "`tinydg.Chat`"), ("reference", "transformers `generate`")):
        for thinking in (False, True):
            found = results.get(f"{name}_think_{thinking}")
            for kind, row in (found or {}).items():
                thought = f"{row['thought']:.1%} / {row['thought_correct']:.1%}" if thinking else ""
                per_canvas = f"{row['forwards_per_canvas']:.2f}" if name == "tinydg" else ""
                lines.append(f"| {label} | {'on' if thinking else 'off'} | {row['turns']} | {KIND_NAMES[kind]} | "
                             f"{row['accuracy']:.1%} | {thought} | {row['tokens_per_forward']:.2f} | {per_canvas} |")
    return lines


def report(results):
    """EVAL.md: the tables, from eval.json."""
    lines = ["# The embedded model on held-out problems and conversations", "",
             "Made by `python -m tinydg.tools.embedded.evaluate --reference --sweep --float8 --bounds` (numbers in eval.json; "
             f"Python {platform.python_version()}, NumPy {np.__version__}). First turns: {results['problems']} "
             "held-out problems of 4 to 12 digits, each a new chat. Follow-ups: every turn after the first of "
             f"{results['conversations']} conversations of 2 to 4 turns, sent through one `tinydg.Chat` (the KV "
             "cache kept between turns, as `--chat` does). A turn is solved when its answer is exactly the "
             "expected one; a thought is correct when it holds the digit counts (sort) or the length (reverse). "
             "transformers runs the same turns with its own cache, from the same seeds.", ""]
    lines += table(results)
    if "same_answers_think_False" in results:
        lines += ["", "tinydg and transformers wrote the same answer on "
                      f"{results['same_answers_think_False']:.1%} of the scored turns with thinking off and "
                      f"{results['same_answers_think_True']:.1%} with thinking on."]
    if "tinydg_by_length_think_False" in results:
        lines += ["", "## tinydg by answer length", "",
                  "Exact matches (solved / turns) by the number of digits in the expected answer.", "",
                  "| digits | " + " | ".join(f"{KIND_NAMES[k]}, thinking {t}" for t in ("off", "on") for k in KINDS) + " |",
                  "|---" * (1 + 2 * len(KINDS)) + "|"]
        tables = [results[f"tinydg_by_length_think_{t}"] for t in (False, True)]
        lengths = sorted({int(n) for t in tables for kind in t.values() for n in kind})
        for n in lengths:
            cells = [t.get(k, {}).get(str(n)) for t in tables for k in KINDS]
            lines.append(f"| {n} | " + " | ".join(f"{c[0]} / {c[1]}" if c else "" for c in cells) + " |")
    if "tinydg_float8" in results:
        q = results["tinydg_float8"]["first"]
        lines += ["", f"With the experts in float8 (e4m3, a scale per row; `dtype='float8'`): {q['accuracy']:.1%} of "
                      f"{q['turns']} first turns, {q['tokens_per_forward']:.2f} tokens per forward."]
    if "sweep" in results:
        b = results["left_to_right"]
        lines += ["", "## First turns against the number of denoising steps", "",
                  "`max_denoising_steps` N (the sampler may stop earlier), thinking off; everything else as the "
                  "checkpoint says. Plot: denoising_steps.png; training curve: training_curve.png.", "",
                  "| N | exact match | tokens per forward | forwards per canvas |", "|---|---|---|---|"]
        for row in results["sweep"]:
            lines.append(f"| {row['max_denoising_steps']} | {row['accuracy']:.1%} | {row['tokens_per_forward']:.2f} | "
                         f"{row['forwards_per_canvas']:.2f} |")
        lines.append(f"| left to right, one token per forward | {b['accuracy']:.1%} | 1.00 | "
                     f"{b['forwards_per_canvas']:.2f} |")
    if "bounds" in results:
        lines += ["", "## Against the entropy bound", "",
                  "`entropy_bound` b, thinking off: the sampler accepts the lowest-entropy positions of a step while "
                  "their entropies, less the largest, sum to at most b. A lower bound accepts fewer positions per "
                  "step; a model as sure as this one still settles a canvas in about two forwards (last column).", "",
                  "| b | first turns | follow-up `sort` | follow-up `reverse it` | tokens per forward (first turns) "
                  "| forwards per canvas (first turns) |", "|---|---|---|---|---|---|"]
        for row in results["bounds"]:
            lines.append(f"| {row['entropy_bound']:g} | {row['first_accuracy']:.1%} | {row['sort_accuracy']:.1%} | "
                         f"{row['reverse_accuracy']:.1%} | {row['tokens_per_forward']:.2f} | "
                         f"{row['forwards_per_canvas']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
