"""Where one forward pass spends its time: every launcher of the GPU forward timed, by kind.

    with Profile(clock, vocab_size, num_experts) as prof:
        tinydg.denoise(model, canvas, cache, sc)
    prof.table()   # {label: ms}, exclusive times that add up to the whole call

While active, the profile swaps the names that tinydg.gpu.forward calls (`linear`, `matmul` and
the launchers of `kernels`) for wrappers that mark the clock before and after, and on the GPU
also `kernels.expert_groups`, which `kernels.experts` calls. Each region's time excludes the regions
inside it (the bf16 conversion inside a product is counted as a conversion), and the whole
call minus every region is what runs between launchers: residual adds, scales, softmax and the like.
The clock is CUDA events on the GPU (no synchronization until the end) or the host's perf_counter
for a dry run on the CPU with the NumPy twins.
"""

import time

from tinydg.gpu import forward, kernels

KERNEL_LABELS = {
    "router_topk": "router: softmax + top-k",
    "experts": "experts: grouped GEMMs + combine",
    "attention": "attention",
    "to_bf16": "bf16 conversions",
    "to_float32": "bf16 conversions",
    "rms_norm": "RMSNorm",
    "apply_rope": "RoPE",
    "gelu_mul": "gelu * up",
    "softcap": "vocabulary: soft-capping",
}
PERMUTATION = "experts: permutation (counting sort)"
REST = "between launchers: residuals, scales, softmax, embedding, soft-capping"


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


class _Launchers:
    """Stands in for the kernels module inside tinydg.gpu.forward: the same functions, timed."""

    def __init__(self, module, region):
        self._module, self._region = module, region

    def __getattr__(self, name):
        fn = getattr(self._module, name)
        return self._region(KERNEL_LABELS[name], fn) if name in KERNEL_LABELS else fn


class Profile:
    def __init__(self, clock, vocab_size, num_experts, split_experts=False):
        self.clock, self.V, self.E, self.split_experts = clock, vocab_size, num_experts, split_experts
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

    def __enter__(self):
        self.saved = (forward.linear, forward.matmul, forward.kernels, kernels.expert_groups)
        forward.linear = self.region(self._product_label, forward.linear)
        forward.matmul = self.region("vocabulary: self-conditioning probs @ E (cuBLAS)", forward.matmul)
        forward.kernels = _Launchers(forward.kernels, self.region)
        if self.split_experts:
            kernels.expert_groups = self.region(PERMUTATION, kernels.expert_groups)
        self.start = self.clock.mark()
        return self

    def __exit__(self, *exc):
        self.end = self.clock.mark()
        forward.linear, forward.matmul, forward.kernels, kernels.expert_groups = self.saved
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
