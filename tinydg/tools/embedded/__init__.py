"""The embedded model (weights/embedded/): its sorting task, its training objective in NumPy, the
torch script that trained it and the script that evaluated it.

    python -m tinydg.tools.embedded.train [--steps N] [--out FOLDER]     (needs the `reference` extra)
    python -m tinydg.tools.embedded.evaluate [--reference] [--sweep] [--float8]

Tooling only: the runtime never imports it.
"""
