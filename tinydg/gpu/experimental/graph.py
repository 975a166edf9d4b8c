"""A denoising step's decoder forward as a CUDA graph: captured once per canvas block, replayed each step.

One decoder forward is about two thousand launches (cuBLAS products, RawKernels, CuPy elementwise
kernels). Run eagerly, the host issues each one; replayed from a graph, the whole forward is one
launch and the GPU never waits for Python. Nothing in `tinydg.model.denoise(..., check_ids=False)`
reads back to the host, which is what makes it capturable (with the default kernels: the cuBLAS
experts read their largest group back, so a model built with them cannot be captured).

    graphed = GraphedDenoise(model)
    logits = graphed(canvas_ids, cache, sc_logits)   # [B, C, V], a buffer the next call overwrites

What a capture needs, and how this file meets it:
- Fixed addresses. The canvas and the self-conditioning logits are copied into buffers that the
  graph was captured reading; the logits come back in the buffer it writes.
- Memory of its own. Every array made while capturing comes from a private CuPy memory pool that
  nothing else allocates from, so no later array can be handed a block the graph still writes.
- No first-time work inside the capture. One eager forward of each kind (first step, or
  self-conditioned) runs first: kernels compile, modules load, lazily uploaded weights arrive.
- One graph per (cache, first step or not): the cache changes when a canvas is committed, and the
  first step of a block has no self-conditioning input. A new cache drops the old graphs.
Random draws stay outside: the sampler runs eagerly after each replay (a captured draw would
replay the same numbers).
"""

from ...errors import InputError
from ...model import denoise
from .. import require


class GraphedDenoise:
    """`denoise(model, canvas_ids, cache, sc_logits, check_ids=False)` replayed from CUDA graphs."""

    def __init__(self, model):
        if model.backend != "cupy":
            raise InputError(f"CUDA graphs need a model on the cupy backend, got backend {model.backend!r}")
        self.cupy = require()
        self.model = model
        self.pool = self.cupy.cuda.MemoryPool()
        self.capture_stream = self.cupy.cuda.Stream(non_blocking=True)
        self.cache = None
        self.graphs = {}      # first step (no self-conditioning) or not -> (graph, logits buffer)
        self.inputs = None    # (canvas [B, C] int64, self-conditioning logits [B, C, V] float32)
        self.captures = 0
        self.warmed = set()   # variants run eagerly once: kernels compiled and loaded, weights uploaded

    def _buffers(self, B):
        cupy, C, V = self.cupy, self.model.config.canvas_length, self.model.text.vocab_size
        if self.inputs is None or self.inputs[0].shape[0] != B:
            with cupy.cuda.using_allocator(self.pool.malloc):
                self.inputs = (cupy.zeros((B, C), dtype=cupy.int64), cupy.zeros((B, C, V), dtype=cupy.float32))
            self.graphs = {}
        return self.inputs

    def _capture(self, cache, first):
        cupy = self.cupy
        canvas, sc = self._buffers(cache.batch_size)
        sc = None if first else sc
        cupy.cuda.get_current_stream().synchronize()  # inputs and cache written before the capture reads them
        with cupy.cuda.using_allocator(self.pool.malloc), self.capture_stream:
            if first not in self.warmed:  # compile, load and upload everything once, outside any capture
                denoise(self.model, canvas, cache, sc, check_ids=False)
                self.capture_stream.synchronize()
                self.warmed.add(first)
            self.capture_stream.begin_capture()
            try:
                logits = denoise(self.model, canvas, cache, sc, check_ids=False)
            finally:
                graph = self.capture_stream.end_capture()
        self.captures += 1
        return graph, logits

    def __call__(self, canvas_ids, cache, self_conditioning_logits=None):
        """canvas_ids [B, C] (in the vocabulary: not checked), cache, sc logits [B, C, V] or None ->
        logits [B, C, V] float32: the graph's output buffer, valid until the next call."""
        cupy = self.cupy
        if cache is not self.cache:  # a committed canvas: new graphs (the old ones finish first)
            cupy.cuda.get_current_stream().synchronize()
            self.cache, self.graphs = cache, {}
        canvas, sc = self._buffers(cache.batch_size)
        first = self_conditioning_logits is None
        if tuple(canvas_ids.shape) != canvas.shape:
            raise InputError(f"canvas_ids must have shape {canvas.shape}, got {tuple(canvas_ids.shape)}")
        canvas[...] = canvas_ids
        if not first:
            if tuple(self_conditioning_logits.shape) != sc.shape:
                raise InputError(f"self_conditioning_logits must have shape {sc.shape}, "
                                 f"got {tuple(self_conditioning_logits.shape)}")
            sc[...] = self_conditioning_logits
        if first not in self.graphs:
            self.graphs[first] = self._capture(cache, first)
        graph, logits = self.graphs[first]
        graph.launch(stream=cupy.cuda.get_current_stream())
        return logits
