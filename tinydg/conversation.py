"""Text in, text out: `chat` answers a conversation once, `Chat` holds one that goes on.

    reply = tinydg.chat(model, "sort 7 2 9 2 4")       # a user turn, or a list of messages
    reply.text, reply.thought, reply.output            # the answer, the thought channel, generate's Output

    session = tinydg.Chat(model)                       # keeps the KV cache between turns
    session.send("sort 3 1 2", seed=0).text
    session.send("sort 9 8 7", seed=1).text            # encodes only the last canvas and the new turn
    session.messages                                   # the history, as chat_format writes it
    session.send("<|image|> What is this?", images=["cat.png"])   # a checkpoint with a vision tower

The pieces, in the order the data flows (the command line's --chat runs the very same ones):

    ids, valid = next_input(tokenizer, conv, text)     the whole prompt on the first turn; later only what
                                                       the cache lacks: the last canvas and the new turn
    events     = stream(model, ids, cache=conv.cache)  tinydg.generation: a Step per step, a Canvas per canvas
    response   = parse_response(new tokens)            tinydg.chat_format: thought channel and answer

A conversation keeps the KV cache between turns (`Output.cache` holds everything but the last
canvas), so each turn encodes only the last canvas and the new user turn, never the history. What
the model has then seen is the full-history prompt, except that its earlier answers stay as it wrote
them: with their (empty) thought channels, which the chat format would cut from a re-formatted history.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from .chat_format import TURN_CLOSE, check_messages, encode_prompt, format_prompt, parse_response
from .errors import InputError, shown
from .generation import SETTINGS, Output, Step, resolve_settings, stream
from .image_prompt import expand_turn, image_list, image_marker
from .model import Model

EMPTY_PROMPT = "the prompt is empty: the model has nothing to answer"


@dataclass(frozen=True)
class Reply:
    """One answer of the model, as text, with the generation that wrote it."""
    text: str  # the answer, as the model wrote it (its thought channel and stop token cut off)
    thought: str  # the thought channel ("" when the model wrote none: thinking is off, or it skipped it)
    output: Output = field(repr=False, compare=False)  # the token-level result of generate for this turn
    # (replies compare, and hash, by their text and thought)


# ---------------------------------------------------------------- one turn after another (the CLI's too)

@dataclass
class Conversation:
    """The messages so far and what the model still needs: the cache covers every token given or
    generated except the last canvas, which the next turn sends along with its own tokens."""
    thinking: bool
    masked_ids: tuple = ()  # ids that stop or pad a canvas but are no part of the chat format
    messages: list = field(default_factory=list)
    cache: object = None
    last_canvas: object = None  # [C] the last committed canvas, not yet in the cache
    closed: bool = True  # the last answer ends with <turn|> (False: another stop token, or the length limit)


class Silent:
    """A view of a turn that shows nothing (take_turn's view for the API; the CLI draws the canvas)."""

    def step(self, step):
        pass

    def canvas(self, canvas):
        pass

    def close(self):
        pass


def ids_to_mask(tokenizer, settings):
    """The generation's stop tokens other than <turn|> (<eos>, <|tool_response>), and <pad>."""
    ids = set(settings.eos_token_id) | ({settings.pad_token_id} - {None})
    return tuple(sorted(ids - {tokenizer.token_to_id(TURN_CLOSE)}))


def next_input(tokenizer, conv, user_text):
    """The tokens (and validity [T]) for the next call: the whole prompt on the first turn; later the
    last canvas, with its `masked_ids` marked invalid, then the text that format_prompt writes
    after the model's last turn. So the valid tokens the model has seen are the full-history prompt,
    except that earlier model turns stay as the model wrote them: with their thought channel (the
    pre-filled empty one, or a written one) and any whitespace that the format would strip."""
    messages = conv.messages + [{"role": "user", "content": user_text}]
    if conv.cache is None:
        ids = encode_prompt(tokenizer, messages, thinking=conv.thinking)
        return np.asarray(ids, dtype=np.int64), np.ones(len(ids), dtype=bool)
    history = format_prompt(conv.messages, thinking=conv.thinking, add_generation_prompt=False)
    full = format_prompt(messages, thinking=conv.thinking)
    # history ends with the model turn's "<turn|>\n"; the model wrote that <turn|> unless it stopped otherwise
    join = ("" if conv.closed else TURN_CLOSE) + "\n" + full[len(history):]
    new = np.asarray(tokenizer.encode(join), dtype=np.int64)
    ids = np.concatenate([conv.last_canvas, new])
    valid = np.concatenate([~np.isin(conv.last_canvas, conv.masked_ids), np.ones(len(new), dtype=bool)])
    return ids, valid


def with_markers(model, conv, user_text, images):
    """user_text with one image marker (<|image|>) per image put in front, when images are given and
    none of the user turns this call encodes marks where they go: user_text, and on the first call
    also the earlier user turns of the history. Otherwise user_text as it is."""
    if not images:
        return user_text
    marker = image_marker(model, images)
    sent = [user_text] + ([m["content"] for m in conv.messages if m["role"] == "user"] if conv.cache is None else [])
    return user_text if any(marker in text for text in sent) else marker * len(images) + user_text


def take_turn(model, tokenizer, conv, user_text, view, seed, settings, images=None):
    """Generate one answer, showing it through view (Silent: nothing); updates conv only once the
    answer is complete. settings: generate's sampler settings. images: the images of the user turns
    this call encodes, in the order of their markers (with_markers puts markers in front of
    user_text if there are none); each marker becomes its image's placeholder run. Returns (response,
    output, T, seconds): the parsed chat_format.Response, the generation's Output, the tokens this call
    encoded, wall time."""
    g = resolve_settings(model, **settings)  # bad settings fail here, before anything is encoded
    images = None if images is None else image_list(images)
    user_text = with_markers(model, conv, user_text, images)
    ids, valid = next_input(tokenizer, conv, user_text)
    first = 0 if conv.cache is None else len(conv.last_canvas)  # the last canvas is the model's, never expanded
    if images or np.any(ids[first:] == model.config.image_token_id):  # a marker without an image is an error
        ids, valid = expand_turn(model, ids, valid, images or [], first)
    start = time.perf_counter()
    run = stream(model, ids[None], seed=seed, attention_mask=valid[None], cache=conv.cache, images=images or None,
                 **settings)
    try:
        while True:
            event = next(run)
            (view.step if isinstance(event, Step) else view.canvas)(event)
    except StopIteration as done:
        out = done.value
    finally:
        view.close()
    seconds = time.perf_counter() - start
    new = out.sequences[0, len(ids):]
    response = parse_response(new, tokenizer)
    conv.messages += [{"role": "user", "content": user_text}, {"role": "model", "content": response.answer}]
    conv.cache, conv.last_canvas = out.cache, out.sequences[0, -model.config.canvas_length:]
    conv.closed = tokenizer.token_to_id(TURN_CLOSE) in new
    conv.masked_ids = ids_to_mask(tokenizer, g)  # what stops or pads last_canvas, under this turn's settings
    return response, out, len(ids), seconds


# ---------------------------------------------------------------- the API's arguments

def check_model(model):
    """model, or an InputError: it must be a tinydg.Model."""
    if not isinstance(model, Model):
        raise InputError(f"model must be a tinydg.Model (from tinydg.load), got {type(model).__name__}")
    return model


def check_flag(value, name):
    """value, or an InputError naming it: True or False."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {shown(value)}")
    return value


def prompt_text(text, name):
    """text, or an InputError naming it: a str with something in it besides whitespace."""
    if not isinstance(text, str):
        raise InputError(f"{name} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{EMPTY_PROMPT} ({name} is {shown(text)})")
    return text


def sampler_settings(settings):
    """settings (generate's sampler keyword arguments) as a dict, or an InputError naming the unknown ones."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise InputError(f"unknown sampler settings {unknown}: the settings are seed and {', '.join(SETTINGS)}")
    return dict(settings)


def as_messages(messages):
    """A user turn (str) or a list of {"role", "content"} messages -> (history, the last user text): the
    list must end with the user turn that the model answers, and that turn must not be empty."""
    if isinstance(messages, str):
        return [], prompt_text(messages, "messages")
    check_messages(messages)
    *history, last = messages
    if last["role"] != "user":
        raise InputError(f"messages[{len(messages) - 1}] must be the user turn that the model answers, "
                         f"got role {last['role']!r}")
    text = prompt_text(last["content"], f"messages[{len(messages) - 1}]['content']")
    return [{"role": m["role"], "content": m["content"]} for m in history], text


def reply_of(response, output):
    """A Reply from a parsed chat_format.Response and the Output that wrote it."""
    return Reply(text=response.answer, thought=response.thought or "", output=output)


# ---------------------------------------------------------------- the API

def chat(model, messages, *, images=None, think=False, seed=None, **settings) -> Reply:
    """The model's answer to messages: a str (one user turn) or a list of {"role": "system" | "user" |
    "assistant" | "model", "content": str} ending with a user turn (tinydg.chat_format's rules).
    images: a list of images (H x W x 3 uint8 arrays, PIL images or file paths) for a checkpoint with a
    vision tower; each fills one <|image|> marker of the user turns, in order, or, when no turn holds a
    marker, they all go in front of the last user turn. think: thinking mode (the model may write a
    thought channel). seed: as generate's (None: a random one). settings: generate's sampler keyword arguments (max_new_tokens, max_denoising_steps,
    entropy_bound, ...; left out, the checkpoint's). Returns a Reply (text, thought, output). The
    tokenizer is the model's own (model.tokenizer). An empty user turn, a bad message or setting is an
    InputError (or ConfigError) naming it."""
    check_model(model)
    check_flag(think, "think")
    history, text = as_messages(messages)
    settings = sampler_settings(settings)
    conv = Conversation(thinking=think, messages=history)
    response, output, _, _ = take_turn(model, model.tokenizer, conv, text, Silent(), seed, settings, images)
    return reply_of(response, output)


class Chat:
    """A conversation with the model that keeps the KV cache between turns, as `python -m tinydg
    --chat` does (the same code: take_turn): each `send` encodes only the last canvas and the new
    user turn. think: thinking mode for every turn; system: a system message, or None."""

    def __init__(self, model, *, think=False, system=None):
        check_model(model)
        check_flag(think, "think")
        if system is not None and not isinstance(system, str):
            raise InputError(f"system must be a str or None, got {type(system).__name__}")
        self.model = model
        self.tokenizer = model.tokenizer  # read now: a checkpoint without tokenizer.json fails here
        self._conv = Conversation(thinking=think,
                                  messages=[] if system is None else [{"role": "system", "content": system}])

    @property
    def think(self) -> bool:
        return self._conv.thinking

    @property
    def messages(self) -> list:
        """The history so far, a copy: [{"role": "system" | "user" | "model", "content": str}, ...]
        (the model's answers without their thought channels)."""
        return [dict(m) for m in self._conv.messages]

    @property
    def cache(self):
        """The KV cache: every token so far but the last canvas (None before the first turn)."""
        return self._conv.cache

    def send(self, text, seed=None, images=None, **settings) -> Reply:
        """The model's answer to the next user turn, text (a non-empty str). seed and settings: as
        tinydg.chat's, for this turn only; images: this turn's images, one per <|image|> marker in text,
        or in front of it when text holds none (tinydg.chat). They stay in the cache for later turns.
        Returns a Reply; on any error the conversation is as before."""
        prompt_text(text, "text")
        settings = sampler_settings(settings)
        response, output, _, _ = take_turn(self.model, self.tokenizer, self._conv, text, Silent(), seed, settings,
                                           images)
        return reply_of(response, output)

    def __repr__(self):
        turns = sum(m["role"] == "user" for m in self._conv.messages)
        cached = 0 if self.cache is None else self.cache.length
        return f"Chat(model={self.model!r}, think={self.think}, turns={turns}, cached={cached})"
