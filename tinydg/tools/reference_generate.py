"""Run the reference `generate` and record every random draw it makes, for exact replay in tinydg.

Needs the optional ``reference`` extra (torch + transformers). The reference samples with the
global torch generator: `torch.randint` for the starting canvas and each renoise, and
`torch.multinomial` for each proposal. On the CPU, `multinomial(p, 1)` is the exponential race
`argmax(p / E)` with `E = empty_like(p).exponential_()`; the recorder rewinds the generator to
recover that E, checks the race gives the reference's sample, and moves the generator back on,
so the reference runs unchanged.

    out, draws = run_generate(model, input_ids, seed=0, max_denoising_steps=8, entropy_bound=1.0)
    tinydg.generate(tiny, input_ids, rng=tinydg.rng.Replay(draws), ...)   # same tokens
"""

import contextlib

import numpy as np
import torch
from transformers.models.diffusion_gemma import generation_diffusion_gemma as G
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig


@contextlib.contextmanager
def recording_draws():
    """Within the block, torch.randint and torch.multinomial record what they draw. Yields the list
    of ("integers", array) / ("exponential", array) records, in draw order."""
    draws = []
    randint, multinomial = torch.randint, torch.multinomial

    def recorded_randint(*args, **kwargs):
        out = randint(*args, **kwargs)
        draws.append(("integers", out.numpy().astype(np.int64)))
        return out

    def recorded_multinomial(probs, num_samples, *args, **kwargs):
        if num_samples != 1 or probs.device.type != "cpu" or kwargs.get("generator") is not None:
            raise NotImplementedError("the recorder covers the reference's use: one sample, CPU, global generator")
        before = torch.get_rng_state()
        out = multinomial(probs, num_samples, *args, **kwargs)
        after = torch.get_rng_state()
        torch.set_rng_state(before)
        E = torch.empty_like(probs).exponential_()
        if not torch.equal(torch.argmax(probs / E, dim=-1), out[:, 0]):
            raise AssertionError("torch.multinomial is not the exponential race on this torch build")
        torch.set_rng_state(after)
        draws.append(("exponential", E.numpy().astype(np.float32)))
        return out

    torch.randint, torch.multinomial = recorded_randint, recorded_multinomial
    try:
        yield draws
    finally:
        torch.randint, torch.multinomial = randint, multinomial


def generate_kwargs(max_new_tokens=None, entropy_bound=None, eos_token_id=None, **settings):
    """tinydg's setting names -> the reference's `generate` keyword arguments."""
    kwargs = {k: v for k, v in settings.items() if v is not None}
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    if entropy_bound is not None:
        kwargs["sampler_config"] = EntropyBoundSamplerConfig(entropy_bound=float(entropy_bound))
    if eos_token_id is not None:
        kwargs["eos_token_id"] = list(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else eos_token_id
    return kwargs


def run_generate(model, input_ids, seed, attention_mask=None, decoder_input_ids=None, past_key_values=None,
                 **settings):
    """transformers `generate` after torch.manual_seed(seed). Returns (dict of numpy arrays:
    sequences, tokens_per_forward; plus "past_key_values" the cache object), draws)."""
    kwargs = generate_kwargs(**settings)
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.as_tensor(np.asarray(attention_mask)).long()
    if decoder_input_ids is not None:
        kwargs["decoder_input_ids"] = torch.as_tensor(np.asarray(decoder_input_ids)).long()
    torch.manual_seed(seed)
    with recording_draws() as draws, torch.no_grad():
        out = model.generate(torch.as_tensor(np.asarray(input_ids)).long(), past_key_values=past_key_values, **kwargs)
    result = {"sequences": out.sequences.numpy().astype(np.int64),
              "tokens_per_forward": out.tokens_per_forward.float().numpy(),
              "past_key_values": out.past_key_values}
    return result, draws


@contextlib.contextmanager
def rounding_noise(relative=1e-5, seed=0):
    """Within the block, the reference's temperature-scaled logits are multiplied by 1 + noise of
    about the size of the float32 differences between two summation orders (its own generator, so
    the sampler's draws are untouched)."""
    original = G.LinearTemperatureScheduleLogitsProcessor.__call__
    generator = torch.Generator().manual_seed(seed)

    def noisy(self, input_ids, scores, cur_step):
        out = original(self, input_ids, scores, cur_step)
        return out * (1 + relative * torch.randn(out.shape, generator=generator))

    G.LinearTemperatureScheduleLogitsProcessor.__call__ = noisy
    try:
        yield
    finally:
        G.LinearTemperatureScheduleLogitsProcessor.__call__ = original


def survives_noise(run, sequences, tries=3):
    """Does run() (a reference generation returning sequences) give the same tokens under rounding
    noise? The self-conditioning loop can amplify float32 noise step after step (on random weights
    it grows several-fold per step); when it does, two correct float32 implementations legitimately
    part ways, so only runs that survive noise can demand identical tokens."""
    for seed in range(tries):
        with rounding_noise(seed=seed):
            if not np.array_equal(run(), sequences):
                return False
    return True
