"""Where one forward pass spends its time: every operation of the model's Ops timed, by kind.

    prof = Profile(clock, vocab_size, num_experts)
    timed = prof.model(model)          # the same model whose ops mark the clock around each call
    with prof:
        tinydg.denoise(timed, canvas, cache, sc)
    prof.table()   # {label: ms}, exclusive times that add up to the whole call

`Profile.model` replaces the fields of `model.ops` (tinydg.ops.Ops) named in LABELS with wrappers
that mark the clock before and after; the model's weights are kept as they are (already uploaded).
Nothing is patched: the timed model is a separate value. Each region's time excludes the regions
inside it, and the whole call minus every region is what runs between the operations: residual adds,
scales, transposes, the self-conditioning softmax and the like. An operation is one region whatever
it launches inside: `experts` holds the counting sort as well as the GEMMs and the combine.
The clock is CUDA events on the GPU (no synchronization until the end) or the host's perf_counter
for a dry run on the CPU with the NumPy twins.
"""

import dataclasses
import time

LABELS = {  # Ops field -> label; `linear` is labelled by its weight's rows (Profile._product_label)
    "embedding": "bf16 conversions",  # the gathered rows of E widened to float32 (a float32 model: the gather)
    "to_cache": "bf16 conversions",  # keys and values as the cache holds them
    "matmul": "vocabulary: self-conditioning probs @ E (cuBLAS)",
    "rms_norm": "RMSNorm",
    "rope": "RoPE",
    "gelu_mul": "gelu * up",
    "attend": "attention",
    "route": "router: softmax + top-k",
    "experts": "experts: grouped GEMMs + combine",
    "softcap": "vocabulary: soft-capping",
}
REST = "between the operations: residuals, scales, transposes, self-conditioning softmax"


class HostClock:
    def mark(self):
        return time.perf_counter()

    def ms(self, a, b):
        return (b - a) * 1e3

    def sync(self):
        pass


class CudaClock:
    def __init__(self):
        import cupy
        self.cupy = cupy

    def mark(self):
        event = self.cupy.cuda.Event()
        event.record()
        return event

    def ms(self, a, b):
        return self.cupy.cuda.get_elapsed_time(a, b)

    def sync(self):
        self.cupy.cuda.get_current_stream().synchronize()


class Profile:
    def __init__(self, clock, vocab_size, num_experts):
        self.clock, self.V, self.E = clock, vocab_size, num_experts
        self.regions = []  # [label, start, end, children]
        self.stack = []

    def region(self, label, fn):
        def timed(*args, **kwargs):
            record = [label(*args) if callable(label) else label, self.clock.mark(), None, []]
            (self.stack[-1][3] if self.stack else self.regions).append(record)
            self.stack.append(record)
            try:
                return fn(*args, **kwargs)
            finally:
                record[2] = self.clock.mark()
                self.stack.pop()
        return timed

    def _product_label(self, x, w, *rest):
        rows = w.shape[0]
        if rows == self.V:
            return "vocabulary: LM head (cuBLAS)"
        if rows == self.E:
            return "router: projection (cuBLAS)"
        return "dense projections: attention, dense MLP, self-conditioning (cuBLAS)"

    def ops(self, ops):
        """A copy of `ops` whose profiled operations are timed regions."""
        timed = {name: self.region(label, getattr(ops, name)) for name, label in LABELS.items()}
        return dataclasses.replace(ops, linear=self.region(self._product_label, ops.linear), **timed)

    def model(self, model):
        """The same model (its weights as they are) computing with timed ops."""
        return dataclasses.replace(model, ops=self.ops(model.ops))

    def __enter__(self):
        self.start = self.clock.mark()
        return self

    def __exit__(self, *exc):
        self.end = self.clock.mark()
        self.clock.sync()
        return False

    def table(self):
        """{label: exclusive ms}, with REST the time outside every region; the values add up to the whole."""
        out = {}

        def visit(record):
            label, start, end, children = record
            total = self.clock.ms(start, end)
            out[label] = out.get(label, 0.0) + total - sum(visit(c) for c in children)
            return total

        inside = sum(visit(r) for r in self.regions)
        out[REST] = self.clock.ms(self.start, self.end) - inside
        return out

    def total_ms(self):
        return self.clock.ms(self.start, self.end)
