"""Training examples from conversations: the very tokens the model reads when tinydg.Chat runs one.

A conversation (task.conversation: sort, `reverse it`, 1 to 4 turns) is turned into the input of one
model call that writes one canvas of its last answer, and that canvas as the target:

    turn 1   <bos>[<|turn>system\\n[<|think|>\\n]{system}<turn|>\\n]<|turn>user\\nsort 7 2 9<turn|>\\n<|turn>model\\n
             [<|channel>thought\\n<channel|>]                       pre-filled empty thought when thinking is off
    canvas   [<|channel>thought\\n0010000101<channel|>]2 7 9<turn|><eos><eos>...   what the model writes, <eos> fill
    turn 2   \\n<|turn>user\\nreverse it<turn|>\\n<|turn>model\\n[<|channel>thought\\n<channel|>]
    ...
    target   canvas k of the last answer: the input then also holds its canvases 0..k-1

The input comes from tinydg.conversation.next_input, the function Chat and the command line call, so
training sees what inference sends: earlier answers as the model wrote them (thought channel
included), their <eos> fill masked out (`valid` False) but still taking positions.

Batches: examples of similar length share a batch; a shorter one gets masked <pad> tokens right after
its <bos>, so that every position still has a real token to attend to (<bos>). The tokens after the
pads keep their distances to each other (all RoPE sees); <bos> moves away from them by the gap, which
a sliding-window layer notices only at the edge of its window. Similar lengths keep the gaps small.
"""

import types

import numpy as np

from tinydg.chat_format import CHANNEL_CLOSE, CHANNEL_OPEN, EOS, PAD, TOOL_RESPONSE_OPEN, TURN_CLOSE
from tinydg.conversation import Conversation, ids_to_mask, next_input
from tinydg.errors import InputError
from tinydg.tools.embedded import task

P_THINKING = 0.5   # conversations with thinking on
P_SYSTEM = 0.2     # conversations that start with a system message (one of task.SYSTEMS)
P_KEEP_SORT_LAST = 0.75  # a conversation whose last turn is a `sort` is kept with this probability, so that
                         # more examples train `reverse it` (39 % of 3,000 drawn instead of 32 %)
LENGTHS = np.arange(task.MIN_DIGITS, task.MAX_DIGITS + 1)
LENGTH_WEIGHTS = LENGTHS / LENGTHS.sum()  # a sort's list has n digits with probability proportional to n: long
                                          # lists, where the misses are, come up more (12 digits: 16 %, not 9 %)


def response_ids(tokenizer, turn, thinking):
    """What the model writes for a turn: [<|channel>thought\\n{thought}<channel|>]{answer}<turn|>."""
    thought = CHANNEL_OPEN + "thought\n" + turn.thought + CHANNEL_CLOSE if thinking else ""
    return tokenizer.encode(thought + turn.answer + TURN_CLOSE)


def canvases(tokenizer, ids, canvas_length):
    """ids then <eos> up to a whole number of canvases: [n, C]."""
    n = -(-len(ids) // canvas_length)
    return np.array(ids + [tokenizer.token_to_id(EOS)] * (n * canvas_length - len(ids))).reshape(n, canvas_length)


def stop_and_pad_ids(tokenizer):
    """The ids a chat masks in the last canvas of a turn (<eos>, <|tool_response>, <pad>), as next_input
    gets them from generation settings whose stop tokens are <eos>, <turn|> and <|tool_response>."""
    settings = types.SimpleNamespace(eos_token_id=[tokenizer.token_to_id(t) for t in (EOS, TURN_CLOSE, TOOL_RESPONSE_OPEN)],
                                     pad_token_id=tokenizer.token_to_id(PAD))
    return ids_to_mask(tokenizer, settings)


def example(tokenizer, turns, *, thinking, system, canvas_length, block):
    """(ids [T], valid [T], target [C]) for the call that writes canvas `block` of the last turn's answer
    (block < the number of canvases that answer fills)."""
    conv = Conversation(thinking=thinking, messages=[{"role": "system", "content": system}] if system else [])
    masked = stop_and_pad_ids(tokenizer)
    ids_so_far, valid_so_far = [], []
    for i, turn in enumerate(turns):
        ids, valid = next_input(tokenizer, conv, turn.user)  # the previous turn's last canvas and this turn
        written = canvases(tokenizer, response_ids(tokenizer, turn, thinking), canvas_length)
        if i == len(turns) - 1:
            if not 0 <= block < len(written):
                raise InputError(f"block {block} of an answer that fills {len(written)} canvases")
            ids = np.concatenate(ids_so_far + [ids, written[:block].ravel()])
            valid = np.concatenate(valid_so_far + [valid, np.ones(block * canvas_length, dtype=bool)])
            return ids.astype(np.int64), valid, written[block]
        # all but the last canvas went into the cache as written; next_input sends the last one
        ids_so_far += [ids, written[:-1].ravel()]
        valid_so_far += [valid, np.ones((len(written) - 1) * canvas_length, dtype=bool)]
        conv.messages += [{"role": "user", "content": turn.user}, {"role": "model", "content": turn.answer}]
        conv.cache = "cached"  # next_input only asks whether there is a cache
        conv.last_canvas, conv.closed, conv.masked_ids = written[-1], True, masked


def training_problem(rng):
    """A training problem (task.training_problem) whose length is drawn with LENGTH_WEIGHTS."""
    return task.training_problem(rng, n=int(rng.choice(LENGTHS, p=LENGTH_WEIGHTS)))


def random_example(tokenizer, rng, canvas_length, problem=training_problem, turns=None):
    """A random conversation (thinking with P_THINKING, a system message with P_SYSTEM, one ending in a
    `sort` kept with P_KEEP_SORT_LAST, lists drawn by training_problem) and one canvas of its last answer,
    uniformly."""
    thinking = bool(rng.random() < P_THINKING)
    system = task.SYSTEMS[int(rng.integers(len(task.SYSTEMS)))] if rng.random() < P_SYSTEM else None
    while True:
        conversation = task.conversation(rng, turns=turns, problem=problem)
        if conversation[-1].user == task.REVERSE or rng.random() < P_KEEP_SORT_LAST:
            break
    n = len(canvases(tokenizer, response_ids(tokenizer, conversation[-1], thinking), canvas_length))
    return example(tokenizer, conversation, thinking=thinking, system=system, canvas_length=canvas_length,
                   block=int(rng.integers(n)))


def pad_after_bos(examples, pad_id):
    """Stack (ids, valid, target) examples into (ids [B, T], valid [B, T], targets [B, C]): the shorter
    ones get masked pad tokens right after their first token (<bos>)."""
    T = max(len(ids) for ids, _, _ in examples)
    ids = np.full((len(examples), T), pad_id, dtype=np.int64)
    valid = np.zeros((len(examples), T), dtype=bool)
    for row, (x, v, _) in enumerate(examples):
        gap = T - len(x)
        ids[row, 0], valid[row, 0] = x[0], v[0]
        ids[row, 1 + gap:], valid[row, 1 + gap:] = x[1:], v[1:]
    return ids, valid, np.stack([t for _, _, t in examples])


def batches(tokenizer, rng, batch_size, canvas_length, pool=8):
    """Endless batches: `pool` batches' worth of random examples at a time, sorted by length so that a
    batch holds similar lengths, handed out in random order."""
    pad_id = tokenizer.token_to_id(PAD)
    while True:
        examples = sorted((random_example(tokenizer, rng, canvas_length) for _ in range(pool * batch_size)),
                          key=lambda e: len(e[0]))
        for b in rng.permutation(pool):
            yield pad_after_bos(examples[b * batch_size:(b + 1) * batch_size], pad_id)
