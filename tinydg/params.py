"""A checkpoint's parameter count, from its config.json alone (no weights needed):

    python -m tinydg.params weights/real

Counts come from the weight tables (tinydg.weights.count_parameters, count_vision_parameters).
For the real DiffusionGemma: 25.25B in the language model (the published 25.2B total, 3.8B active
per token), and 0.57B in the vision tower and its projector, which the published figure leaves out.
"""

import argparse
import sys

from .config import load_config
from .errors import TinyDGError
from .weights import count_parameters, count_vision_parameters


def short(n) -> str:
    """2.35M, 25.25B: a count as people write it."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def report(config) -> str:
    """The counts of a Config, one part per line, then the whole."""
    text, active = count_parameters(config.text_config)
    lines = [f"language model    {text:>15,}  {short(text)}, {short(active)} active per token"]
    total = text
    if config.vision_config is None:
        lines.append("vision tower      none (config.json has no vision_config)")
    else:
        tower, projector = count_vision_parameters(config.vision_config, config.text_config.hidden_size)
        lines.append(f"vision tower      {tower:>15,}  {short(tower)}")
        lines.append(f"vision projector  {projector:>15,}  {short(projector)}")
        total += tower + projector
    lines.append(f"total             {total:>15,}  {short(total)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinydg.params",
                                     description="Count a checkpoint's parameters from its config.json.")
    parser.add_argument("folder", help="a checkpoint folder (config.json is enough)")
    args = parser.parse_args(argv)
    try:
        config, _ = load_config(args.folder)
    except TinyDGError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
