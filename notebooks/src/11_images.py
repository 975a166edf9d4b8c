# %% [markdown]
# # 11. Images in: from pixels to soft tokens the diffusion decoder can read
#
# DiffusionGemma reads images through a vision tower (about 570M parameters in the real model).
# The path, each step a short NumPy function:
#
# 1. `tinydg.image_processor`: resize the image (keeping its shape) to a soft-token budget, cut it into
#    p x p patches, and note each patch's (x, y) place;
# 2. `tinydg.vision`: a bidirectional transformer over the patches with a 2-D RoPE
#    (`tinydg.vision_rope`), then the mean of each k x k cell of patches: one soft token per cell;
# 3. a projector into the language model's width; the soft tokens replace the `<|image|>` placeholders
#    of the prompt (`tinydg.image_prompt`), where each image's run attends both ways in the encoder.
#
# The decoder never sees pixels: it reads the image through the encoder's KV cache, like any prompt.
# This notebook runs on `weights/fixtures/vision_pool2_f32`, a tiny random checkpoint with a vision
# tower (4 x 4 patches, 2 x 2 pooling, 70 soft tokens at most) made by `weights/make_vision_reference.py`.
# Its weights are random, so its answers are noise; its numbers match transformers' (tests/test_vision_golden.py).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import tinydg
from tinydg.attention import Visibility
from tinydg.chat_format import encode_prompt
from tinydg.image_processor import num_soft_tokens, process_image, target_size
from tinydg.image_prompt import placeholder_runs
from tinydg.resample import resize_bicubic
from tinydg.vision import image_features, pooling_cells
from tinydg.vision_rope import axial_inv_freq, axial_tables

model = tinydg.load(os.path.join("..", "weights", "fixtures", "vision_pool2_f32"))
vision = model.config.vision_config
budget = model.processor_config.image_processor.max_soft_tokens
p, k = vision.patch_size, vision.pooling_kernel_size
print(f"patch {p} x {p} pixels, pooling {k} x {k} patches, at most {budget} soft tokens per image")

# %% [markdown]
# ## An image
# Any H x W x 3 uint8 array (or a PIL image, or a file path). Here a drawn one: a sun over hills.

# %%
H, W = 45, 70
y, x = np.mgrid[0:H, 0:W]
image = np.zeros((H, W, 3), np.uint8)
image[...] = (90 + 100 * y // H)[..., None] * np.array([0.6, 0.8, 1.0])  # sky
image[(x - 50) ** 2 + (y - 12) ** 2 < 64] = (250, 210, 40)  # sun
image[y > 30 + 6 * np.sin(x / 8)] = (40, 140, 60)  # hills
plt.imshow(image)
plt.title(f"{H} x {W} pixels")
plt.show()

# %% [markdown]
# ## Resize to the budget, then patches
# The budget is B = max_soft_tokens k^2 patches. The image is scaled (up or down) so that its area fills
# the budget, then each side is floored to a multiple of k p, so that the patches tile k x k cells.

# %%
height, width = target_size(H, W, patch_size=p, pooling_kernel_size=k, max_soft_tokens=budget)
resized = resize_bicubic(image, height, width)  # Pillow's antialiased bicubic, bit for bit
processed = process_image(image, patch_size=p, pooling_kernel_size=k, max_soft_tokens=budget)
N = len(processed.pixel_values)
print(f"resized to {height} x {width}: {N} patches of {p * p * 3} values, {processed.num_soft_tokens} soft tokens")
print("first positions (x, y):", processed.positions[:4].tolist(), "...")

fig, ax = plt.subplots(figsize=(8, 5))
ax.imshow(resized)
for edge in range(0, width + 1, p):
    ax.axvline(edge - 0.5, color="w", lw=0.3)
for edge in range(0, height + 1, p):
    ax.axhline(edge - 0.5, color="w", lw=0.3)
for (px, py) in processed.positions[::7]:
    ax.text(px * p + p / 2 - 0.5, py * p + p / 2 - 0.5, f"{px},{py}", color="k", fontsize=5, ha="center",
            va="center")
ax.set_title("patches and their (x, y) positions")
plt.show()

# %% [markdown]
# For the real model (16 x 16 patches, 3 x 3 pooling, 280 soft tokens) a photo of any shape becomes
# at most 280 soft tokens:

# %%
for h, w in [(480, 640), (1080, 1920), (100, 100), (50, 2000)]:
    print(f"{h:5d} x {w:<5d} -> {target_size(h, w, patch_size=16, pooling_kernel_size=3, max_soft_tokens=280)}"
          f", {num_soft_tokens(h, w):3d} soft tokens")

# %% [markdown]
# ## The 2-D RoPE
# Each attention head of the tower splits in two halves: the first half turns with the patch's column
# x, the second with its row y (each half a 1-D RoPE). Below, the cosine of the slowest and fastest
# channel of each half, drawn over the patch grid.

# %%
freqs = axial_inv_freq(vision.head_dim, vision.rope_parameters["rope_theta"])
(cos_x, _), (cos_y, _) = axial_tables(processed.positions, freqs)  # each [N, d/2]
rows, cols = height // p, width // p
fig, axes = plt.subplots(1, 4, figsize=(12, 2.5))
for ax, (title, values) in zip(axes, [("x half, fastest", cos_x[:, 0]), ("x half, slowest", cos_x[:, -1]),
                                      ("y half, fastest", cos_y[:, 0]), ("y half, slowest", cos_y[:, -1])]):
    ax.imshow(values.reshape(rows, cols), cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Pooling: one soft token per k x k cell
# After its layers, the tower averages the patches of each k x k cell (found from the positions, so
# two images of different shapes pool independently) and multiplies by sqrt(hidden).

# %%
cells = pooling_cells(processed.positions, k)  # [N]: the soft token each patch goes to
plt.imshow(cells.reshape(rows, cols) % 7, cmap="tab10")
plt.title(f"{N} patches -> {processed.num_soft_tokens} soft tokens")
plt.axis("off")
plt.show()

soft = image_features(model, processed.pixel_values, processed.positions)  # [t, D]
print("soft tokens:", soft.shape, "(the language model's width; not scaled by sqrt(D) like token embeddings)")

# %% [markdown]
# ## Where the soft tokens go
# The chat template writes one `<|image|>` where an image sits; `tinydg.expand_images` turns it into
# `<|image>`, then one `<|image|>` per soft token, then `<image|>`. The encoder replaces those
# placeholders' embeddings by the soft tokens, in order.

# %%
tokenizer = model.tokenizer
marked = encode_prompt(tokenizer, [{"role": "user", "content": "<|image|>What is this?"}])
ids = tinydg.expand_images(model, marked, [image])
runs = placeholder_runs(np.array([ids]), model.config.image_token_id)
print(len(marked), "tokens with the marker ->", len(ids), "with the run; runs (row, first, last):", runs)
shown = [tokenizer.id_to_token(i) for i in ids]
print("".join(shown[:runs[0][1] + 2]), f"... x{runs[0][2] - runs[0][1] + 1} ...", "".join(shown[runs[0][2]:]))

# %% [markdown]
# ## The encoder's mask, with the image as a block
# Causal everywhere (sliding layers also windowed), except that the image's placeholders see each
# other both ways, on every layer, as transformers' `generate` builds it. The image's run reaches past
# the sliding window inside itself.

# %%
T = len(ids)
valid = np.ones((1, T), bool)
window = model.config.text_config.sliding_window
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
for ax, (name, w) in zip(axes, [("full attention", 0), (f"sliding window {window}", window)]):
    view = Visibility(q_start=0, cached=0, causal=True, window=w, valid=valid, runs=tuple(runs))
    ax.imshow(view.mask[0, 0], cmap="Greys", interpolation="nearest")
    ax.set_title(f"{name}: query (row) sees key (column)", fontsize=9)
plt.show()

# %% [markdown]
# ## Asking about the image
# `tinydg.chat` expands the marker (or puts the images in front of the turn when there is none) and
# generates; `tinydg.Chat` keeps the image in the cache for later turns. On the command line:
# `python -m tinydg --weights FOLDER --image photo.png "What is this?"`, and `/image PATH` in `--chat`.
# This tiny model's weights are random, so the answer is noise.

# %%
reply = tinydg.chat(model, "<|image|>What is this?", images=[image], seed=0, max_new_tokens=8)
print(repr(reply.text))
session = tinydg.Chat(model)
session.send("<|image|>Look at this.", images=[image], seed=0, max_new_tokens=8)
print("cached positions after the first turn:", session.cache.length, "(the image's run among them)")
