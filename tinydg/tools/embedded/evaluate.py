"""Evaluate the embedded model on held-out sorting problems, the numbers in weights/embedded/EVAL.md.

    python -m tinydg.tools.embedded.evaluate              tinydg, default sampler settings (NumPy only)
    python -m tinydg.tools.embedded.evaluate --reference  also transformers' generate, same seeds (needs torch)
    python -m tinydg.tools.embedded.evaluate --sweep      accuracy / tokens per forward / steps per canvas
                                                          against max_denoising_steps, and the left-to-right
                                                          baseline; writes the plots (needs matplotlib)
    python -m tinydg.tools.embedded.evaluate --float8     also with the experts in float8 (tinydg.fp8)

Problems: tinydg.tools.embedded.task.test_problems(numpy.random.default_rng(2026), N), lengths
4..12, never seen in training. A problem counts as solved when the answer (the text before <turn|>)
is exactly the sorted list. Generation runs in batches of one problem length (no padding),
seed = 1000 + batch.
"""

import argparse
import json
import os
import time

import numpy as np

import tinydg
from tinydg.chat_format import encode_prompt, parse_response
from tinydg.model import denoise, encode
from tinydg.tokenizer import load_tokenizer
from tinydg.tools.embedded import task

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))  # the repository root
FOLDER = os.path.join(ROOT, "weights", "embedded")
PROBLEM_SEED = 2026
STEP_SWEEP = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def batches(tokenizer, problems):
    """[(indices, prompt ids [b, T])]: problems grouped by length, in order of first appearance."""
    groups = {}
    for i, digits in enumerate(problems):
        groups.setdefault(len(digits), []).append(i)
    return [(idx, np.array([encode_prompt(tokenizer, [{"role": "user", "content": task.prompt_text(problems[i])}])
                            for i in idx])) for idx in groups.values()]


def answer_of(tokenizer, new_ids):
    return parse_response(tokenizer.decode([int(t) for t in new_ids])).answer


def score(problems, answers, tokens_per_forward, steps):
    solved = [task.is_correct(d, a) for d, a in zip(problems, answers)]
    return {"problems": len(problems), "accuracy": float(np.mean(solved)),
            "tokens_per_forward": float(np.mean(tokens_per_forward)), "steps_per_canvas": float(np.mean(steps))}


def run_tinydg(model, tokenizer, problems, **settings):
    answers, tpf, steps = [None] * len(problems), [0.0] * len(problems), [0] * len(problems)
    for b, (idx, ids) in enumerate(batches(tokenizer, problems)):
        out = tinydg.generate(model, ids, seed=1000 + b, **settings)
        for row, i in enumerate(idx):
            answers[i] = answer_of(tokenizer, out.sequences[row, ids.shape[1]:])
            tpf[i], steps[i] = out.tokens_per_forward[row], out.steps_per_canvas[:, row].sum()
    return answers, tpf, steps


def run_reference(folder, tokenizer, problems):
    from tinydg.tools.reference import load_float32
    from tinydg.tools.reference_generate import run_generate
    model = load_float32(folder, attn_implementation="sdpa")
    answers, tpf = [None] * len(problems), [0.0] * len(problems)
    for b, (idx, ids) in enumerate(batches(tokenizer, problems)):
        out, _ = run_generate(model, ids, 1000 + b)
        for row, i in enumerate(idx):
            answers[i] = answer_of(tokenizer, out["sequences"][row, ids.shape[1]:])
            tpf[i] = out["tokens_per_forward"][row]
    return answers, tpf


def left_to_right(model, tokenizer, problems, seed=0):
    """The baseline: the same model fills the canvas one position per forward, left to right, taking
    the argmax there (self-conditioned on the previous forward); the rest of the canvas stays noise.
    Stops at <turn|> or <eos>. Tokens per forward is 1 by construction."""
    stops = {tokenizer.token_to_id("<turn|>"), tokenizer.token_to_id("<eos>")}
    C, V = model.config.canvas_length, model.text.vocab_size
    rng = np.random.default_rng(seed)
    answers, forwards = [None] * len(problems), [0] * len(problems)
    for idx, ids in batches(tokenizer, problems):
        _, cache = encode(model, ids)
        canvas = rng.integers(0, V, size=(len(idx), C))
        done = np.zeros(len(idx), dtype=bool)
        used = np.zeros(len(idx), dtype=int)
        sc = None
        for pos in range(C):
            logits = denoise(model, canvas, cache, sc)
            sc = logits
            token = logits[:, pos].argmax(-1)
            canvas[:, pos] = np.where(done, canvas[:, pos], token)
            used += ~done
            done |= np.isin(token, list(stops))
            if done.all():
                break
        for row, i in enumerate(idx):
            answers[i], forwards[i] = answer_of(tokenizer, canvas[row]), used[row]
    return answers, forwards


def sweep(model, tokenizer, problems):
    rows = []
    for n in STEP_SWEEP:
        answers, tpf, steps = run_tinydg(model, tokenizer, problems, max_denoising_steps=n)
        rows.append({"max_denoising_steps": n, **score(problems, answers, tpf, steps)})
        print(rows[-1], flush=True)
    answers, forwards = left_to_right(model, tokenizer, problems)
    baseline = score(problems, answers, [1.0] * len(problems), forwards)
    print("left to right", baseline, flush=True)
    return rows, baseline


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
    ax.set_xlabel("training step (batch 64)")
    ax.set_ylabel("loss")
    ax.set_title("Embedded model: training curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "training_curve.png"), dpi=80)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    n = [r["max_denoising_steps"] for r in rows]
    for ax, key, label in zip(axes, ("accuracy", "tokens_per_forward", "steps_per_canvas"),
                              ("exact match", "tokens per forward", "forwards per canvas")):
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
    p.add_argument("--problems", type=int, default=300)
    p.add_argument("--reference", action="store_true")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--float8", action="store_true", help="also run with the experts in float8 (dtype='float8')")
    args = p.parse_args()
    model, tokenizer = tinydg.load(args.folder), load_tokenizer(args.folder)
    problems = task.test_problems(np.random.default_rng(PROBLEM_SEED), args.problems)
    results = {}
    start = time.time()
    answers, tpf, steps = run_tinydg(model, tokenizer, problems)
    results["tinydg"] = {**score(problems, answers, tpf, steps), "seconds": round(time.time() - start, 1)}
    print("tinydg", results["tinydg"], flush=True)
    if args.float8:
        start = time.time()
        fp8_model = tinydg.load(args.folder, dtype="float8")
        fp8_answers, fp8_tpf, fp8_steps = run_tinydg(fp8_model, tokenizer, problems)
        results["tinydg_float8"] = {**score(problems, fp8_answers, fp8_tpf, fp8_steps),
                                    "seconds": round(time.time() - start, 1),
                                    "same_answers_as_tinydg": float(np.mean([a == b for a, b in zip(answers, fp8_answers)]))}
        print("tinydg float8", results["tinydg_float8"], flush=True)
    if args.reference:
        start = time.time()
        ref_answers, ref_tpf = run_reference(args.folder, tokenizer, problems)
        results["reference"] = {**score(problems, ref_answers, ref_tpf, [0]), "seconds": round(time.time() - start, 1)}
        del results["reference"]["steps_per_canvas"]
        results["reference"]["same_answers_as_tinydg"] = float(np.mean([a == b for a, b in zip(answers, ref_answers)]))
        print("reference", results["reference"], flush=True)
    if args.sweep:
        results["sweep"], results["left_to_right"] = sweep(model, tokenizer, problems)
        plots(args.folder, results["sweep"], results["left_to_right"])
    path = os.path.join(args.folder, "eval.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    old.update(results)
    with open(path, "w") as f:
        json.dump(old, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.folder, "EVAL.md"), "w") as f:
        f.write(report(old))


def report(results):
    """EVAL.md: the tables, from eval.json."""
    import platform
    lines = ["# The embedded model on held-out sorting problems", "",
             "Made by `python -m tinydg.tools.embedded.evaluate --reference --sweep --float8` "
             f"(numbers in eval.json; Python {platform.python_version()}, NumPy {np.__version__}). A problem is "
             "solved when the answer is exactly the sorted list. Problems: "
             "`tinydg.tools.embedded.task.test_problems(default_rng(2026), N)`, "
             "lengths 4 to 12 digits, all outside the training split.", "",
             "| generator | problems | exact match | tokens per forward | forwards per canvas |", "|---|---|---|---|---|"]
    t = results["tinydg"]
    lines.append(f"| `tinydg.generate`, the checkpoint's settings | {t['problems']} | {t['accuracy']:.1%} | "
                 f"{t['tokens_per_forward']:.2f} | {t['steps_per_canvas']:.2f} |")
    if "reference" in results:
        r = results["reference"]
        lines.append(f"| transformers `generate`, same checkpoint and seeds | {r['problems']} | {r['accuracy']:.1%} | "
                     f"{r['tokens_per_forward']:.2f} | |")
    if "tinydg_float8" in results:
        q = results["tinydg_float8"]
        lines.append(f"| `tinydg.generate`, experts in float8 (`dtype='float8'`) | {q['problems']} | {q['accuracy']:.1%} | "
                     f"{q['tokens_per_forward']:.2f} | {q['steps_per_canvas']:.2f} |")
    if "left_to_right" in results:
        b = results["left_to_right"]
        lines.append(f"| left to right, one token per forward (same model) | {b['problems']} | {b['accuracy']:.1%} | "
                     f"{b['tokens_per_forward']:.2f} | {b['steps_per_canvas']:.2f} |")
    if "reference" in results:
        lines += ["", f"tinydg and transformers gave the same answer on "
                      f"{results['reference']['same_answers_as_tinydg']:.1%} of the problems."]
    if "tinydg_float8" in results:
        lines += ["", f"With float8 experts (e4m3, a scale per row; `tinydg.fp8`) tinydg gave the same answer as in "
                      f"float32 on {results['tinydg_float8']['same_answers_as_tinydg']:.1%} of the problems."]
    if "sweep" in results:
        lines += ["", "## Against the number of denoising steps", "",
                  "`max_denoising_steps` N (the sampler may stop earlier); everything else as the checkpoint says. "
                  "Plot: denoising_steps.png; training curve: training_curve.png.", "",
                  "| N | exact match | tokens per forward | forwards per canvas |", "|---|---|---|---|"]
        for row in results["sweep"]:
            lines.append(f"| {row['max_denoising_steps']} | {row['accuracy']:.1%} | {row['tokens_per_forward']:.2f} | "
                         f"{row['steps_per_canvas']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
