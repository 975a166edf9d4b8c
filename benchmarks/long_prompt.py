"""CPU benchmark: encoding long prompts, tinydg against transformers (SDPA attention), then one decoder step.

Both sides run float32 on the same checkpoint (a random model made and saved by the reference, as
in benchmarks/cpu_forward.py), with the same thread count. For each configuration and prompt length
each side runs in a fresh process, capped by resource.setrlimit(RLIMIT_AS) and a wall-clock timeout,
so that a run that does not fit is recorded ("did not fit", "killed", "timed out") instead of taking
the machine down. In that process: a warm-up encode and decoder step on a short prompt (weights
converted, threads started), then the encode of the long prompt and a decoder step over a canvas
after it (each --repeats times, median seconds, up to 16K tokens; once above). Reported per run:
- encode seconds, and its peak memory: peak RSS (getrusage ru_maxrss) and the RSS right before the
  encode; "peak extra" is their difference, the memory the encode itself needed. ru_maxrss also
  counts earlier peaks (loading, the warm-up), so the peak of the encode alone is given too: the
  high-water mark VmHWM, reset right before the encode, minus the RSS then ("VmHWM extra");
- decoder-step seconds (tinydg.denoise / transformers' decoder forward over the whole cache);
- where both sides fit, the largest difference between their decoder logits;
- the machine's 1-minute load average before and after each run's process (others may share it).
A child's ru_maxrss starts at its parent's RSS, so the parent imports nothing heavy (no torch, and
matplotlib only once every run is done).

    python benchmarks/long_prompt.py [--threads 2] [--limit-gb 16] [--timeout 10800] [--repeats 3]
        [--configs tiny medium] [--quick | --lengths 1024 2048] [--plot benchmarks/long_prompt.png] [--json FILE]

Configurations: `tiny` is tinydg.tools.reference.tiny_config with hidden 64, six layers (five sliding
with window 1024, then one full), positions up to 262,144 and a 256-token canvas, at prompts of 4K,
16K, 64K and 262,144 - 256 (the longest prompt that leaves room for one canvas); `medium` is
benchmarks/cpu_forward.py's, with the same position limit, at 32K. --quick runs the tiny model at 1K
and 2K. Needs the `reference` extra, and matplotlib for the plot (a log-log plot of peak extra memory
and encode time against prompt length).
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from cpu_forward import CONFIGS  # noqa: E402  (no heavy imports)

MAX_POSITIONS = 262_144
TINY = dict(text=dict(hidden_size=64, sliding_window=1024,
                      layer_types=["sliding_attention"] * 5 + ["full_attention"]), canvas=256)
LENGTHS = {"tiny": [4096, 16384, 65536, MAX_POSITIONS - TINY["canvas"]], "medium": [32768]}
QUICK = {"tiny": [1024, 2048]}
SIDES = ("tinydg", "transformers")
WARMUP_TOKENS = 64
REPEAT_UP_TO = 16384  # longer prompts are encoded once
TIMEOUT = 3 * 3600  # seconds per run's process: the tiny model's 256K encode takes about an hour on 2 cores


# --- configurations and the checkpoint (made in a child process) -----------------------------------

def spec(name):
    """{"text": text_config overrides, "canvas": C} of a configuration, positions up to MAX_POSITIONS."""
    base = TINY if name == "tiny" else CONFIGS[name]
    return dict(text=dict(base["text"], max_position_embeddings=MAX_POSITIONS), canvas=base["canvas"])


def make_checkpoint(name, folder):
    """Save a random float32 model of configuration `name` as cpu_forward.py makes it: the reference's
    own initialization, router weights of std 1 so that expert choices are decisive."""
    import torch
    import transformers

    from tinydg.tools import reference as ref
    s = spec(name)
    torch.manual_seed(0)
    config = transformers.DiffusionGemmaConfig(**ref.tiny_config(canvas_length=s["canvas"], **s["text"]))
    model = transformers.DiffusionGemmaForBlockDiffusion._from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("router.proj.weight"):
                p.normal_(0.0, 1.0)
    model.save_pretrained(folder)


# --- one measurement (in a child process) ------------------------------------------------------------

def rss_mib():
    """The current resident set of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_high_water():
    """Set this process's VmHWM to its current RSS (Linux: clear_refs 5); ru_maxrss is not reset."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def high_water_mib():
    """VmHWM: the peak RSS since the last reset_high_water."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


def inputs(name, length):
    """(prompt [1, length], canvas [1, C]) of random token ids, the same on both sides."""
    import numpy as np
    s = spec(name)
    vocab = s["text"].get("vocab_size", 128)
    rng = np.random.default_rng(0)
    return rng.integers(0, vocab, (1, length)), rng.integers(0, vocab, (1, s["canvas"]))


def tinydg_side(folder):
    """(encode(ids) -> cache, denoise(canvas, cache, start) -> logits) of tinydg (start: the cache length)."""
    import tinydg
    model = tinydg.load(folder)
    return (lambda ids: tinydg.encode(model, ids)[1],
            lambda canvas, cache, start: tinydg.denoise(model, canvas, cache))


def transformers_side(folder, threads):
    """(encode, denoise) of transformers with SDPA attention, driven as in cpu_forward.py."""
    import torch
    import transformers
    torch.set_num_threads(threads)
    theirs = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="sdpa").eval()

    def encode(ids):
        with torch.no_grad():
            cache = transformers.DynamicCache(config=theirs.config.get_text_config(decoder=True))
            theirs.model.encoder(input_ids=torch.from_numpy(ids), past_key_values=cache)
            return cache

    def denoise(canvas, cache, start):
        positions = torch.arange(start, start + canvas.shape[1])[None]
        with torch.no_grad():
            return theirs(decoder_input_ids=torch.from_numpy(canvas), past_key_values=cache,
                          decoder_position_ids=positions).logits.numpy()

    return encode, denoise


def measure(side, name, length, folder, threads, logits_path, repeats):
    """An encode of `length` tokens and a decoder step after it, after a short warm-up: median seconds of
    `repeats` (1 above REPEAT_UP_TO tokens), the peak memory of the encodes."""
    import gc
    import statistics

    import numpy as np
    encode, denoise = tinydg_side(folder) if side == "tinydg" else transformers_side(folder, threads)
    ids, canvas = inputs(name, length)
    denoise(canvas, encode(ids[:, :WARMUP_TOKENS]), WARMUP_TOKENS)
    gc.collect()
    reset_high_water()
    before = rss_mib()
    encode_s, denoise_s = [], []
    for _ in range(repeats if length <= REPEAT_UP_TO else 1):
        cache = None  # a repeat does not hold the previous cache
        t = time.perf_counter()
        cache = encode(ids)
        encode_s.append(time.perf_counter() - t)
    peak, high_water = peak_rss_mib(), high_water_mib()
    for _ in range(len(encode_s)):
        t = time.perf_counter()
        logits = denoise(canvas, cache, length)
        denoise_s.append(time.perf_counter() - t)
    encode_s, denoise_s = statistics.median(encode_s), statistics.median(denoise_s)
    np.save(logits_path, np.asarray(logits, dtype=np.float32))
    return dict(encode_s=encode_s, rss_before_mib=before, peak_rss_mib=peak, peak_extra_mib=peak - before,
                hwm_extra_mib=high_water - before, denoise_s=denoise_s, peak_rss_after_denoise_mib=peak_rss_mib())


def child(args):
    """--one SIDE CONFIG LENGTH: the address space capped first, then one JSON line on stdout."""
    import resource
    limit = int(args.limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.path.insert(0, ROOT)
    side, name, length = args.one[0], args.one[1], int(args.one[2])
    try:
        result = measure(side, name, length, args.folder, args.threads, args.logits, args.repeats)
    except (MemoryError, RuntimeError) as e:  # torch reports an allocation failure as a RuntimeError
        result = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    print(json.dumps(result), flush=True)


# --- the parent: one child per run, the table, the plot ---------------------------------------------

def say(line):
    print(line, flush=True)


def thread_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads))


def run_child(argv, threads, timeout):
    """Run this script with `argv` in a fresh process; (the last JSON line it printed or an error, wall s)."""
    t = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, os.path.abspath(__file__)] + argv, env=thread_env(threads),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout} s"), time.perf_counter() - t
    wall = time.perf_counter() - t
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if lines:
        return json.loads(lines[-1]), wall
    if done.returncode < 0:
        return dict(error=f"killed (signal {-done.returncode})"), wall
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return dict(error=f"exit {done.returncode}: {tail[:160]}"), wall


def measure_all(plan, threads, limit_gb, timeout, repeats, log=say):
    """plan: [(config, [lengths])]. One row per config, length and side, with the logit difference
    between the sides where both ran."""
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, lengths in plan:
            folder = os.path.join(work, name)
            made, wall = run_child(["--make", name, folder], threads, timeout)
            if "error" in made:
                raise RuntimeError(f"making the {name} checkpoint failed: {made['error']}")
            for length in lengths:
                pair = []
                for side in SIDES:
                    logits = os.path.join(work, f"{name}-{length}-{side}.npy")
                    argv = ["--one", side, name, str(length), "--folder", folder, "--logits", logits,
                            "--threads", str(threads), "--limit-gb", str(limit_gb), "--repeats", str(repeats)]
                    load = os.getloadavg()[0]
                    result, wall = run_child(argv, threads, timeout)
                    row = dict(config=name, prompt=length, side=side, wall_s=wall, load=(load, os.getloadavg()[0]),
                               **result)
                    log(f"# {name} {length} {side}: {json.dumps(result)} (process {wall:.0f} s)")
                    pair.append((row, logits))
                diff = logit_diff(*(path for row, path in pair if "error" not in row))
                for row, _ in pair:
                    row["logit_diff"] = diff
                    rows.append(row)
    return rows


def logit_diff(*paths):
    """max |tinydg - transformers| over the decoder logits, or None unless both sides produced them."""
    if len(paths) != 2:
        return None
    import numpy as np
    a, b = (np.load(p) for p in paths)
    return float(np.abs(a - b).max())


def header(threads, limit_gb, timeout, repeats):
    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "absent"

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.machine())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"# {cpu} ({platform.machine()}), {os.cpu_count()} cores, {memory:.0f} GiB; threads={threads}; "
            f"python {platform.python_version()}, numpy {version('numpy')}, torch {version('torch')}, "
            f"transformers {version('transformers')}; {datetime.date.today()}; each run in its own process "
            f"capped at RLIMIT_AS {limit_gb:g} GiB and {timeout} s; seconds: median of {repeats} up to "
            f"{REPEAT_UP_TO} tokens, one run above")


def table(rows):
    lines = ["| config | prompt tokens | side | encode s | encode peak extra MiB | RSS before MiB | peak RSS MiB "
             "| VmHWM extra MiB | denoise s | logit diff | process wall s | load before/after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "-" if r["logit_diff"] is None else f"{r['logit_diff']:.1e}"
        if "error" in r:
            cells = [f"{outcome(r['error'])} ({brief(r['error'])})", "-", "-", "-", "-", "-"]
        else:
            cells = [f"{r['encode_s']:.2f}", f"{r['peak_extra_mib']:.0f}", f"{r['rss_before_mib']:.0f}",
                     f"{r['peak_rss_mib']:.0f}", f"{r['hwm_extra_mib']:.0f}", f"{r['denoise_s']:.3f}"]
        lines.append(f"| {r['config']} | {r['prompt']} | {r['side']} | " + " | ".join(cells) +
                     f" | {diff} | {r['wall_s']:.0f} | {r['load'][0]:.1f}/{r['load'][1]:.1f} |")
    return "\n".join(lines)


def outcome(error):
    """How a failed run is named in the table."""
    if "alloc" in error or "Memory" in error or "killed" in error:
        return "did not fit"
    return "did not finish" if "timed out" in error else "failed"


def brief(error):
    """An error in a few words: torch's allocation failure as the size it asked for."""
    asked = re.search(r"tried to allocate (\d+) bytes", error)
    if asked:
        return f"{error.split(':')[0]}: could not allocate {int(asked.group(1)) / 2**30:.1f} GiB"
    return error[:100]


def plot(rows, path, limit_gb):
    """Log-log: peak extra memory and encode time against prompt length, per side and configuration;
    a run that did not fit is an x on the memory bound."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (mem, sec) = plt.subplots(1, 2, figsize=(9, 3.6))
    colors = dict(tinydg="tab:blue", transformers="tab:orange")
    for (name, side) in sorted({(r["config"], r["side"]) for r in rows}):
        ok = [r for r in rows if (r["config"], r["side"]) == (name, side) and "error" not in r]
        bad = [r for r in rows if (r["config"], r["side"]) == (name, side) and "error" in r
               and outcome(r["error"]) == "did not fit"]
        style = dict(color=colors[side], marker="o" if name == "tiny" else "s",
                     linestyle="-" if name == "tiny" else "none", label=f"{side}, {name}")
        mem.plot([r["prompt"] for r in ok], [max(r["peak_extra_mib"], 1) for r in ok], **style)
        sec.plot([r["prompt"] for r in ok], [r["encode_s"] for r in ok], **style)
        if bad:
            mem.plot([r["prompt"] for r in bad], [limit_gb * 1024] * len(bad), "x", color=colors[side], ms=9,
                     label=f"{side}, {name}: did not fit")
    mem.axhline(limit_gb * 1024, color="gray", lw=0.8, ls="--", label=f"RLIMIT_AS {limit_gb:g} GiB")
    for ax, title in ((mem, "encode peak extra RSS (MiB)"), (sec, "encode time (s)")):
        ax.set(xscale="log", yscale="log", xlabel="prompt tokens", title=title)
        ax.grid(True, which="major", alpha=0.3)
    mem.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def run(plan, threads=2, limit_gb=16.0, timeout=TIMEOUT, repeats=3, plot_path=None, log=say):
    """Measure `plan` ([(config, [lengths])]), print the header and table; returns (rows, text)."""
    rows = measure_all(plan, threads, limit_gb, timeout, repeats, log)
    text = header(threads, limit_gb, timeout, repeats) + "\n" + table(rows)
    log(text)
    if plot_path:
        plot(rows, plot_path, limit_gb)
        log(f"# plot: {plot_path}")
    return rows, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-gb", type=float, default=16.0, help="RLIMIT_AS of each run's process, GiB")
    ap.add_argument("--timeout", type=int, default=TIMEOUT, help="wall-clock limit of each run's process, s")
    ap.add_argument("--repeats", type=int, default=3, help=f"encodes and steps per run, up to {REPEAT_UP_TO} tokens")
    ap.add_argument("--configs", nargs="+", default=list(LENGTHS))
    ap.add_argument("--lengths", type=int, nargs="+", help="prompt lengths for every configuration given")
    ap.add_argument("--quick", action="store_true", help="the tiny model at 1K and 2K tokens")
    ap.add_argument("--plot", default=os.path.join(ROOT, "benchmarks", "long_prompt.png"))
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--one", nargs=3, metavar=("SIDE", "CONFIG", "LENGTH"), help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs=2, metavar=("CONFIG", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--logits", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return child(args)
    if args.make:
        sys.path.insert(0, ROOT)
        make_checkpoint(*args.make)
        return print(json.dumps({"made": args.make[1]}))
    if args.quick:
        plan = list(QUICK.items())
    else:
        plan = [(name, args.lengths or LENGTHS[name]) for name in args.configs]
    rows, _ = run(plan, args.threads, args.limit_gb, args.timeout, args.repeats, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
