"""Record how far the reference itself moves when it computes in bfloat16.

For each fixture, the reference (transformers) is loaded with dtype=torch.bfloat16 and run through
the same protocol as reference.npz; the largest absolute logit differences from the float32
recording go to bf16_error.json. A bf16 tinydg run is held to this: bf16 arithmetic may move the
logits as much as the reference's own bf16 arithmetic does, not more.

    python weights/make_bf16_error.py     (needs the `reference` extra: torch 2.13.0, transformers 5.23.0)
"""

import json
import os
import sys

import numpy as np
import torch
from transformers import DiffusionGemmaForBlockDiffusion

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tinydg.tools import reference  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
KEYS = ("logits", "logits_sc", "next_logits")


def write_bf16_error(folder, rec):
    """Run the reference in bfloat16 from `folder` on the float32 recording's inputs (rec: its arrays)
    and write the largest logit differences to folder/bf16_error.json; returns them."""
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager",
                                                            experts_implementation="eager").eval()
    out = reference.record(model, rec["input_ids"], rec["attention_mask"], rec["canvas"], rec["next_canvas"])
    error = {k: float(np.abs(out[k].astype(np.float32) - rec[k]).max()) for k in KEYS}
    with open(os.path.join(folder, "bf16_error.json"), "w") as f:
        json.dump({"torch": torch.__version__, "max_abs_logit_error": error}, f, indent=1)
        f.write("\n")
    return error


def main():
    for name in sorted(os.listdir(FIXTURES)):
        folder = os.path.join(FIXTURES, name)
        if not os.path.exists(os.path.join(folder, "reference.npz")):
            continue
        print(name, write_bf16_error(folder, dict(np.load(os.path.join(folder, "reference.npz")))))


if __name__ == "__main__":
    main()
