"""The gated MLP used three times in DiffusionGemma: the dense MLP beside the experts, each expert,
and the self-conditioning block.

    mlp(x) = down( gelu_tanh(gate x) * up x )

Weights are stored as in `torch.nn.Linear`: [out_features, in_features], so `x @ W.T`.
"""

import math

from .backend import namespace

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_tanh(x):
    """The tanh approximation of GELU (transformers' "gelu_pytorch_tanh")."""
    xp = namespace(x)
    c = xp.float32(_SQRT_2_OVER_PI)
    return xp.float32(0.5) * x * (xp.float32(1.0) + xp.tanh(c * (x + xp.float32(0.044715) * x * x * x)))


def gated_mlp(x, gate_proj, up_proj, down_proj):
    """x [..., D]; gate_proj, up_proj [I, D]; down_proj [D, I] -> [..., D]."""
    return (gelu_tanh(x @ gate_proj.T) * (x @ up_proj.T)) @ down_proj.T
