"""Linear layers and the gated MLP, used three times in DiffusionGemma: the dense MLP beside the
experts, each expert, and the self-conditioning block.

    linear(x, W) = x @ W.T                          W [out_features, in_features], as torch.nn.Linear
    mlp(x)       = down( gelu_tanh(gate x) * up x )

Letters: D hidden, I intermediate.
"""

import math

from .backend import namespace

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def linear(x, w):
    """x [..., in]; w [out, in] -> [..., out]."""
    return x @ w.T


def gelu_tanh(x):
    """The tanh approximation of GELU (transformers' "gelu_pytorch_tanh")."""
    xp = namespace(x)
    c = xp.float32(_SQRT_2_OVER_PI)
    return xp.float32(0.5) * x * (xp.float32(1.0) + xp.tanh(c * (x + xp.float32(0.044715) * x * x * x)))


def gelu_mul(gate, up):
    """The gate of the gated MLP: gelu_tanh(gate) * up, same shape."""
    return gelu_tanh(gate) * up


def gated_mlp(ops, x, gate_proj, up_proj, down_proj):
    """x [..., D]; gate_proj, up_proj [I, D]; down_proj [D, I] -> [..., D]. `ops`: the model's
    operations (tinydg.ops), whose linear and gelu_mul are the two functions above on NumPy."""
    return ops.linear(ops.gelu_mul(ops.linear(x, gate_proj), ops.linear(x, up_proj)), down_proj)
