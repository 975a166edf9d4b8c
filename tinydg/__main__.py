"""`python -m tinydg` and the `tinydg` console script: the command line (tinydg/cli.py).

Ctrl-C while the command line's modules import (NumPy, the model code, the tokenizer library) ends
it as Ctrl-C at any later moment does in cli.main: exit status 130 and one line on stderr, no
traceback. `import tinydg` itself loads nothing heavy (its names are imported on first use), so
only the interpreter's own start-up, before any tinydg code runs, is out of reach.
"""

import sys


def interrupted():
    if sys.stderr is not None:  # print(file=None) would print to stdout
        try:
            print("tinydg: interrupted", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # a closed or broken stderr
            pass
    return 130  # 128 + SIGINT, as cli.EXIT_INTERRUPTED


def run():
    """The command line with its imports guarded: the exit status."""
    try:
        from .cli import main
        return main()
    except KeyboardInterrupt:  # during the import, or while main was already ending
        return interrupted()


if __name__ == "__main__":
    sys.exit(run())
