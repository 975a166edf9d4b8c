"""Tooling around tinydg, kept apart from the runtime: the transformers reference recorders (reference,
reference_generate; they need the `reference` extra, torch + transformers), the safetensors writer
that tests and fixture scripts use, the demo, and the embedded model's task, training and evaluation
(embedded/). Nothing in the runtime package imports tinydg.tools (tests/test_layout.py checks that).
"""
