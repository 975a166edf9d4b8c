"""Images in the prompt: where each image's soft tokens go, and the prompt ids that make room for them.

Follows transformers 5.23 `Gemma4Processor` (the prompt) and `DiffusionGemmaEncoderModel.forward` with
`generate`'s encoder masks (models/diffusion_gemma/). An image of t soft tokens (tinydg.image_processor)
sits in the prompt as

    <|image>  <|image|> x t  <image|>          boi_token_id, image_token_id x t, eoi_token_id

and the encoder's input embeddings of the t <|image|> rows are replaced by the image's features
(tinydg.vision.image_features), in order: images fill the placeholder runs row by row over the batch,
left to right. The features are NOT multiplied by the text scale sqrt(D) that token embeddings get.
Positions stay 1-D (one per placeholder, like any token). In the encoder the placeholders of one image
see each other in both directions, on every layer (tinydg.attention.Visibility.runs); the decoder never
sees pixels, only the cached keys and values of those positions.

The chat template writes one <|image|> where an image sits; `expand_images` turns each into the run its
image needs. A video frame (tinydg.video.VideoFrame) is an image at the video processor's budget (70 soft
tokens by default, instead of 280). Letters: B batch, T tokens of this call, D hidden, t an image's soft
tokens.
"""

import numpy as np

from .errors import InputError, shown
from .image_processor import num_soft_tokens, process_image, to_rgb
from .video import VideoFrame
from .vision import image_features


def placeholder_runs(ids, image_token_id):
    """ids [B, T] (NumPy or CuPy) -> [(row, first, last)]: each maximal run of image_token_id, positions
    within the row, in the order images fill them (row by row, then left to right)."""
    is_image = ids == image_token_id  # [B, T]
    is_image = is_image if isinstance(is_image, np.ndarray) else is_image.get()  # a CuPy array comes to the host
    edges = np.diff(is_image.astype(np.int8), axis=1, prepend=0, append=0)  # +1 where a run starts, -1 after it
    starts, ends = np.argwhere(edges == 1), np.argwhere(edges == -1)  # both in row-major order
    return [(int(row), int(first), int(after) - 1) for (row, first), (_, after) in zip(starts, ends)]


def soft_tokens_of(model, image, name="image"):
    """How many soft tokens `image` becomes in this model's prompt (its processor budget), without
    running the tower. name: how an error names the image."""
    vision = _vision(model, "images")
    height, width = _rgb(image, name).shape[:2]
    return num_soft_tokens(height, width, patch_size=vision.patch_size,
                           pooling_kernel_size=vision.pooling_kernel_size, max_soft_tokens=_budget(model, image))


def expand_images(model, ids, images):
    """A prompt's ids (1-D, as the chat template writes them: one image_token_id where each image sits)
    -> the ids with the i-th marker replaced by boi, image_token_id x t_i, eoi (t_i: soft_tokens_of
    images[i]), as a list. An InputError when the markers and images differ in number."""
    config = model.config
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    marks = [i for i, token in enumerate(ids) if token == config.image_token_id]
    images = image_list(images)
    if len(marks) != len(images):
        raise InputError(f"ids hold {len(marks)} image markers (image_token_id {config.image_token_id}) but "
                         f"images holds {len(images)} images: one marker per image")
    out, done = [], 0
    for i, (mark, image) in enumerate(zip(marks, images)):
        t = soft_tokens_of(model, image, f"images[{i}]")
        out += ids[done:mark] + [config.boi_token_id] + [config.image_token_id] * t + [config.eoi_token_id]
        done = mark + 1
    return out + ids[done:]


def image_marker(model, images):
    """The text that marks where an image sits in a chat turn: the tokenizer's <|image|> (the token of
    image_token_id). An InputError if the checkpoint cannot read images, naming `images`."""
    _vision(model, "images")
    return model.tokenizer.id_to_token(model.config.image_token_id)


def expand_turn(model, ids, valid, images, first=0):
    """A chat call's ids [T] and validity [T] -> (ids, valid) with the markers at positions >= first
    expanded for images (expand_images); what comes before first (the last canvas, which the model
    wrote) is kept as it is. Expanded tokens are valid."""
    new = expand_images(model, ids[first:], images)
    ids = np.concatenate([ids[:first], np.asarray(new, dtype=ids.dtype)])
    return ids, np.concatenate([valid[:first], np.ones(len(new), dtype=bool)])


def prompt_images(model, ids, images):
    """The images of an encoder call, checked against the placeholders of ids [B, T] (NumPy):
    -> (runs [(row, first, last)], features [t, D] per run). Every image goes through the processor
    (with the checkpoint's budget: the video one for a VideoFrame) and the vision tower once."""
    vision = _vision(model, "images")
    images = image_list(images)
    runs = placeholder_runs(ids, model.config.image_token_id)
    if len(runs) != len(images):
        raise InputError(f"images holds {len(images)} images but input_ids hold {len(runs)} image placeholder runs "
                         f"(image_token_id {model.config.image_token_id}): one run per image, in order")
    features = []
    for i, ((row, first, last), image) in enumerate(zip(runs, images)):
        patches = process_image(_rgb(image, f"images[{i}]"), patch_size=vision.patch_size,
                                pooling_kernel_size=vision.pooling_kernel_size,
                                max_soft_tokens=_budget(model, image))
        if last - first + 1 != patches.num_soft_tokens:
            raise InputError(f"images[{i}] makes {patches.num_soft_tokens} soft tokens but its placeholder run "
                             f"(input_ids row {row}, positions {first}..{last}) holds {last - first + 1}: "
                             "expand the prompt with tinydg.image_prompt.expand_images")
        features.append(image_features(model, patches.pixel_values, patches.positions))  # [t, D]
    return runs, features


def place_images(x, runs, features):
    """x [B, T, D] token embeddings -> a copy whose rows of each run (row, first, last) hold that image's
    features [t, D]: the soft tokens as they are, not scaled by sqrt(D)."""
    x = x.copy()
    for (row, first, last), f in zip(runs, features):
        x[row, first:last + 1] = f
    return x


def _rgb(image, name):
    """image (an array, a PIL image, a file path or a VideoFrame) -> [H, W, 3] uint8, or an InputError
    naming it."""
    try:
        return to_rgb(image.pixels if isinstance(image, VideoFrame) else image)
    except InputError as e:
        raise InputError(f"{name}: {e}") from None


def _budget(model, image):
    """The soft-token budget of one image: the video processor's for a VideoFrame (a frame of a video,
    tinydg.video), the image processor's for any other image."""
    processors = model.processor_config
    return (processors.video_processor if isinstance(image, VideoFrame) else processors.image_processor).max_soft_tokens


def image_list(images):
    """images as a list, or an InputError: it must be a list (or tuple) of images."""
    if not isinstance(images, (list, tuple)):
        raise InputError(f"images must be a list of images (H x W x 3 uint8 arrays, PIL images or file paths), "
                         f"got {shown(images) if isinstance(images, (str, bytes)) else type(images).__name__}")
    return list(images)


def _vision(model, name):
    """The vision_config, or an InputError naming `name` for a checkpoint that cannot read
    images: one without a vision tower, one whose tower pools by 1, or one whose image token ids have no
    rows in its embedding table."""
    config = model.config
    vision = config.vision_config
    if vision is None or model.processor_config is None:
        raise InputError(f"{name}: this checkpoint has no vision tower (its config.json has no vision_config), "
                         "so it cannot read images")
    if vision.pooling_kernel_size < 2:
        raise InputError(f"{name}: this checkpoint's vision_config.pooling_kernel_size is "
                         f"{vision.pooling_kernel_size}; transformers 5.23 returns padding rows for a kernel of 1, so "
                         "there is no reference to match and tinydg reads images only with a kernel of 2 or more "
                         "(the released checkpoint's is 3)")
    vocab = config.text_config.vocab_size
    for key in ("boi_token_id", "image_token_id", "eoi_token_id"):
        token = getattr(config, key)
        if not 0 <= token < vocab:
            raise InputError(f"{name}: this checkpoint's {key} {token} is outside its vocabulary of {vocab} tokens, "
                             "so its prompts cannot hold images")
    return vision
