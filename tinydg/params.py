"""Parameter counts from the shape table alone (no weights needed).

Total counts every text weight once (the LM head is the tied embedding). Active counts what one
token uses: everything except the experts it is not routed to, i.e. the expert weights scaled by
top_k_experts / num_experts. For the real DiffusionGemma config (`weights/real/config.json`) this
gives the published 25.2B total and 3.8B active; the ~0.55B vision tower is not included.
"""

import math

from .weights import weight_shapes


def count_parameters(text) -> tuple[int, int]:
    """(total, active) text parameters for a TextConfig."""
    total = expert = 0
    for name, shape in weight_shapes(text).items():
        n = math.prod(shape)
        total += n
        if ".experts." in name:
            expert += n
    active = total - expert + expert * text.top_k_experts // text.num_experts
    return total, active


def main(folder):
    """python -m tinydg.params weights/real  ->  the counts for a checkpoint folder's config.json."""
    from .config import load_config
    total, active = count_parameters(load_config(folder)[0].text_config)
    print(f"{total / 1e9:.2f}B parameters in total, {active / 1e9:.2f}B active per token "
          f"(text stack; the LM head is the tied embedding)")


if __name__ == "__main__":
    import sys
    main(sys.argv[1] if len(sys.argv) > 1 else "weights/real")
