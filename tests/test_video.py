"""Video frames (tinydg/video.py): the sampling, the timestamps, the prompt layout and the frame sizes,
by their properties and against transformers' Gemma 4 video code where it runs without torchvision.

torchvision cannot be installed beside this torch, and without it
`transformers.models.gemma4.video_processing_gemma4` cannot even be imported (its class body evaluates
`tvF.InterpolationMode`, a NameError). So the reference tests call what can be called:
- `transformers.video_utils.default_sample_indices_fn` and the unbound `BaseVideoProcessor.sample_frames`
  (the sampling Gemma4VideoProcessor inherits) on a hand-made object holding Gemma4VideoProcessor's
  class defaults, which are read from its source file (ast, not imported);
- `processing_gemma4.get_aspect_ratio_preserving_size` (checked to be the same function, by its syntax
  tree, as the video module's copy) and the unbound `Gemma4Processor._get_num_multimodal_tokens` with
  video sizes, for the frame sizes at the video budget;
- the unbound `Gemma4Processor.replace_video_token`, for the prompt text;
- the unbound `TorchvisionBackend._fuse_mean_std_and_rescale_factor`, for the offset and divisor of the
  rescale.
Not compared, because they need torchvision: the resize of the frames (`tvF.resize`, antialiased bicubic
on uint8, which tinydg replaces by its Pillow-exact resize), the division itself (`tvF.normalize`), and
so the pixel values of a whole processed video."""

import ast
import importlib.util
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydg.errors import InputError
from tinydg.image_processor import SUPPORTED_SOFT_TOKENS, num_soft_tokens, rescale, target_size
from tinydg.video import (MARKER, NUM_FRAMES, VIDEO_SOFT_TOKENS, VideoFrame, frame_soft_tokens, process_frame,
                          sample_frame_indices, sample_video, timestamp, video_prompt)

BOI, EOI = "<|image>", "<image|>"  # Gemma 4's boi_token and eoi_token
STAMP = r"\d{2,}:\d{2}"
rates = st.one_of(st.integers(1, 240), st.floats(0.01, 240, allow_nan=False), st.sampled_from([23.976, 29.97, 24, 30]))


def clip(count, height, width, seed=0):
    """[count, height, width, 3] uint8 noise, each frame's first pixel its index (mod 256)."""
    frames = np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(count) % 256
    return frames


def expanded(text, t):
    """A video's prompt text with each marker as expand_images makes it: boi, t markers, eoi."""
    return text.replace(MARKER, BOI + MARKER * t + EOI)  # one pass: the inserted markers are not replaced again


# ---- sampling ----------------------------------------------------------------------------------------

@settings(max_examples=300)
@given(total=st.one_of(st.integers(1, 100), st.integers(1, 10**7)), data=st.data())
def test_uniform_sampling(total, data):
    n = data.draw(st.integers(1, min(total, 3000)))
    indices = sample_frame_indices(total, num_frames=n)
    assert indices.dtype == np.int64 and indices.shape == (n,)
    assert indices[0] == 0 and indices[-1] < total
    gaps = np.diff(indices)
    assert np.all((gaps == total // n) | (gaps == -(-total // n)))  # evenly spread: each gap floor or ceil of F/n
    if n == total:
        np.testing.assert_array_equal(indices, np.arange(total))


def test_the_default_is_32_frames_and_a_shorter_clip_is_refused():
    np.testing.assert_array_equal(sample_frame_indices(64), np.arange(32) * 2)
    assert len(sample_frame_indices(32)) == NUM_FRAMES == 32
    with pytest.raises(InputError, match=r"num_frames=32 \(the default\) exceeds the clip's 31 frames"):
        sample_frame_indices(31)
    with pytest.raises(InputError, match="num_frames=5 exceeds the clip's 4 frames"):
        sample_frame_indices(4, num_frames=5)


@settings(max_examples=300)
@given(total=st.integers(1, 10**5), video_fps=rates, fps=rates)
def test_fps_sampling_keeps_fps_frames_per_second(total, video_fps, fps):
    seconds = total / video_fps
    if max(1, math.floor(seconds * fps)) > total:
        with pytest.raises(InputError, match="lower fps"):
            sample_frame_indices(total, fps=fps, video_fps=video_fps)
        return
    indices = sample_frame_indices(total, fps=fps, video_fps=video_fps)
    assert 1 <= len(indices) <= total and indices[0] == 0
    assert len(indices) == max(1, math.floor(seconds * fps))  # whole frames of the clip's seconds, at least one
    np.testing.assert_array_equal(indices, sample_frame_indices(total, num_frames=len(indices)))  # then uniform


def test_fps_sampling_examples():
    np.testing.assert_array_equal(sample_frame_indices(300, fps=1, video_fps=30), np.arange(10) * 30)  # 10 s
    np.testing.assert_array_equal(sample_frame_indices(10, fps=0.01, video_fps=30), [0])  # at least one frame
    np.testing.assert_array_equal(sample_frame_indices(10, fps=10.5, video_fps=10), np.arange(10))  # 10.5 -> 10


@pytest.mark.parametrize("kwargs, match", [
    (dict(total_frames=0), "total_frames must be an integer >= 1"),
    (dict(total_frames=10.0), "total_frames must be an integer"),
    (dict(total_frames=10, num_frames=0), "num_frames must be an integer >= 1"),
    (dict(total_frames=10, num_frames=True), "num_frames must be an integer"),
    (dict(total_frames=10, num_frames=2.0), "num_frames must be an integer"),
    (dict(total_frames=10, num_frames=2, fps=1, video_fps=10), "mutually exclusive"),
    (dict(total_frames=10, fps=1), "pass video_fps"),
    (dict(total_frames=10, fps=0, video_fps=10), "fps must be a finite number > 0"),
    (dict(total_frames=10, fps=-1, video_fps=10), "fps must be a finite number > 0"),
    (dict(total_frames=10, fps=math.inf, video_fps=10), "fps must be a finite number > 0"),
    (dict(total_frames=10, fps=math.nan, video_fps=10), "fps must be a finite number > 0"),
    (dict(total_frames=10, fps=1, video_fps=0), "video_fps must be a finite number > 0"),
    (dict(total_frames=10, fps=1, video_fps="30"), "video_fps must be a finite number > 0"),
    (dict(total_frames=10, fps=11, video_fps=10), "asks for 11 frames of a clip of 10 frames"),
    (dict(total_frames=10, fps=1e308, video_fps=1e-300), "asks for inf frames"),
])
def test_impossible_sampling_is_an_input_error(kwargs, match):
    total = kwargs.pop("total_frames")
    with pytest.raises(InputError, match=match):
        sample_frame_indices(total, **kwargs)


# ---- timestamps and the prompt text -------------------------------------------------------------------

@settings(max_examples=500)
@given(seconds=st.one_of(st.integers(0, 10**6), st.floats(0, 10**7, allow_nan=False)))
def test_timestamps_are_whole_minutes_and_seconds(seconds):
    text = timestamp(seconds)
    assert re.fullmatch(STAMP, text)
    minutes, secs = map(int, text.split(":"))
    assert secs < 60 and minutes * 60 + secs == math.floor(seconds)


@pytest.mark.parametrize("seconds, text", [(0, "00:00"), (0.999, "00:00"), (59.999, "00:59"), (60, "01:00"),
                                           (75.9, "01:15"), (3599, "59:59"), (3600, "60:00"), (6000, "100:00"),
                                           (np.float64(61.5), "01:01"), (np.int64(7), "00:07")])
def test_timestamp_examples(seconds, text):
    assert timestamp(seconds) == text


@pytest.mark.parametrize("seconds", [-1, -0.5, math.inf, math.nan, "1", None, True])
def test_a_timestamp_needs_finite_seconds(seconds):
    with pytest.raises(InputError, match="seconds must be a finite number >= 0"):
        timestamp(seconds)


def test_prompt_example():
    frames = sample_video(clip(120, 8, 8), video_fps=30, num_frames=4)  # frames 0, 30, 60, 90: seconds 0..3
    assert video_prompt(frames) == "00:00 <|image|> 00:01 <|image|> 00:02 <|image|> 00:03 <|image|>"
    assert video_prompt(frames[:1], marker="<img>") == "00:00 <img>"


@settings(max_examples=100)
@given(count=st.integers(1, 400), video_fps=rates, data=st.data())
def test_prompt_layout(count, video_fps, data):
    n = data.draw(st.integers(1, min(count, 40)))
    frames = sample_video(clip(count, 1, 1), video_fps=video_fps, num_frames=n)
    text = video_prompt(frames)
    assert re.fullmatch(rf"{STAMP} {re.escape(MARKER)}( {STAMP} {re.escape(MARKER)})*", text)
    assert text.count(MARKER) == n
    assert re.findall(STAMP, text) == [timestamp(frame.seconds) for frame in frames]


@settings(max_examples=100)
@given(count=st.integers(1, 60), height=st.integers(1, 5), width=st.integers(1, 5), video_fps=rates,
       as_list=st.booleans(), data=st.data())
def test_sample_video_keeps_the_sampled_frames_and_their_times(count, height, width, video_fps, as_list, data):
    n = data.draw(st.integers(1, count))
    frames = clip(count, height, width, seed=count)
    got = sample_video(list(frames) if as_list else frames, video_fps=video_fps, num_frames=n)
    indices = sample_frame_indices(count, num_frames=n)
    assert len(got) == n and all(isinstance(frame, VideoFrame) for frame in got)
    for frame, i in zip(got, indices):
        np.testing.assert_array_equal(frame.pixels, frames[i])
        assert frame.seconds == i / video_fps and isinstance(frame.seconds, float)
    assert [frame.seconds for frame in got] == sorted(frame.seconds for frame in got)


@pytest.mark.parametrize("frames, match", [
    (np.zeros((2, 4, 4), np.uint8), r"frames must be a \[frames, height, width, 3\] uint8 array"),
    (np.zeros((2, 4, 4, 4), np.uint8), r"got shape \(2, 4, 4, 4\)"),
    (np.zeros((2, 4, 4, 3), np.float32), "float32"),
    (np.zeros((0, 4, 4, 3), np.uint8), r"got shape \(0, 4, 4, 3\)"),
    ([], r"\(empty\)"),
    ("clip.mp4", "got str"),
    ([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)], r"frames\[1\] must be a \[height, width, 3\]"),
    ([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)], r"frames\[1\] is 4 x 5 pixels but frames\[0\]"),
    ([np.zeros((4, 4, 3), np.uint8), [[0]]], r"frames\[1\] must be .* got list"),
])
def test_bad_frames_are_input_errors(frames, match):
    with pytest.raises(InputError, match=match):
        sample_video(frames, video_fps=30, num_frames=1)


def test_bad_prompt_arguments_are_input_errors():
    with pytest.raises(InputError, match="frames must be a non-empty list of VideoFrame"):
        video_prompt([])
    with pytest.raises(InputError, match=r"frames\[0\] must be a VideoFrame"):
        video_prompt([np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(InputError, match="video_fps must be a finite number > 0"):
        sample_video(clip(4, 2, 2), video_fps=None, num_frames=1)


# ---- frame sizes at the video budget ------------------------------------------------------------------

def sides():
    return st.one_of(st.integers(1, 64), st.integers(1, 4000), st.sampled_from([1, 240, 360, 480, 720, 1080, 1920]))


@settings(max_examples=300)
@given(height=sides(), width=sides())
def test_a_frame_has_at_most_70_soft_tokens(height, width):
    frame = VideoFrame(np.zeros((height, width, 3), np.uint8), 0.0)
    t = frame_soft_tokens(frame)
    assert 1 <= t <= VIDEO_SOFT_TOKENS == 70
    assert t == num_soft_tokens(height, width, max_soft_tokens=70) <= num_soft_tokens(height, width)
    new_height, new_width = target_size(height, width, patch_size=16, pooling_kernel_size=3, max_soft_tokens=70)
    assert new_height % 48 == 0 and new_width % 48 == 0 and t == new_height * new_width // 48**2


@pytest.mark.parametrize("size, tokens", [((1080, 1920), 66), ((480, 640), 63), ((512, 512), 64), ((1, 1), 64),
                                          ((720, 1280), 66), ((10, 4000), 70)])
def test_frame_size_examples(size, tokens):
    """Like images, frames rarely fill the budget: the sides round down to multiples of 48 pixels."""
    assert frame_soft_tokens(np.zeros((*size, 3), np.uint8)) == tokens


@settings(max_examples=8)
@given(height=st.integers(1, 200), width=st.integers(1, 200), budget=st.sampled_from(SUPPORTED_SOFT_TOKENS[:2]))
def test_every_frame_of_a_clip_is_processed_alike(height, width, budget):
    frames = sample_video(clip(6, height, width, seed=height * width), video_fps=24, num_frames=3)
    processed = [process_frame(frame, max_soft_tokens=budget) for frame in frames]
    t = frame_soft_tokens(frames[0], max_soft_tokens=budget)
    for frame in processed:
        assert frame.num_soft_tokens == t <= budget
        assert frame.pixel_values.shape == (9 * t, 16 * 16 * 3) and frame.pixel_values.dtype == np.float32
        np.testing.assert_array_equal(frame.positions, processed[0].positions)


def test_frame_budget_and_pixels_are_checked():
    with pytest.raises(InputError, match="max_soft_tokens must be one of"):
        frame_soft_tokens(np.zeros((4, 4, 3), np.uint8), max_soft_tokens=64)
    with pytest.raises(InputError, match="frame must be a VideoFrame or a"):
        process_frame(np.zeros((4, 4), np.uint8))


# ---- the rescale ---------------------------------------------------------------------------------------

def test_the_video_rescale_equals_the_image_rescale_for_every_byte():
    """The video processor divides float32 x by float32 255; the image processor rounds float64 x / 255
    (and x * (1/255)) to float32. All three, and tinydg's rescale, agree on all 256 values."""
    x = np.arange(256)
    video = x.astype(np.float32) / np.float32(255)
    assert video.dtype == np.float32
    np.testing.assert_array_equal(video, (x.astype(np.float64) / 255).astype(np.float32))
    np.testing.assert_array_equal(video, (x.astype(np.float64) * (1 / 255)).astype(np.float32))
    np.testing.assert_array_equal(video, rescale(x.astype(np.uint8)))


# ---- against transformers ------------------------------------------------------------------------------

def reference_source(module):
    """The syntax tree of a transformers module, read from its file without importing it."""
    pytest.importorskip("transformers")
    with open(importlib.util.find_spec(module).origin, encoding="utf-8") as f:
        return ast.parse(f.read())


def video_processor_defaults():
    """Gemma4VideoProcessor's literal class attributes (num_frames, max_soft_tokens, ...), from its source."""
    tree = reference_source("transformers.models.gemma4.video_processing_gemma4")
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Gemma4VideoProcessor")
    defaults = {}
    for node in cls.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:  # not a literal (resample = PILImageResampling.BICUBIC)
                pass
    return defaults


def reference_processor():
    """A hand-made stand-in for Gemma4VideoProcessor (which needs torchvision): its class defaults, and
    BaseVideoProcessor's fps (None)."""
    from transformers.video_processing_utils import BaseVideoProcessor
    defaults = video_processor_defaults()
    return SimpleNamespace(num_frames=defaults["num_frames"], fps=getattr(BaseVideoProcessor, "fps", None))


def metadata(total, video_fps=None, indices=None):
    from transformers.video_utils import VideoMetadata
    return VideoMetadata(total_num_frames=total, fps=video_fps, frames_indices=indices)


def ours_or_error(**kwargs):
    try:
        return sample_frame_indices(**kwargs)
    except InputError:
        return "error"


@pytest.mark.reference
def test_the_defaults_are_gemma4_video_processors():
    defaults = video_processor_defaults()
    assert defaults["num_frames"] == NUM_FRAMES and defaults["max_soft_tokens"] == VIDEO_SOFT_TOKENS
    assert defaults["do_sample_frames"] is True and "fps" not in defaults
    assert defaults["patch_size"] == 16 and defaults["pooling_kernel_size"] == 3
    assert defaults["do_rescale"] and defaults["do_normalize"]  # the rescale is fused into the normalization:
    assert defaults["image_mean"] == [0.0] * 3 and defaults["image_std"] == [1.0] * 3  # ... with mean 0, std 1


@pytest.mark.reference
@settings(max_examples=300)
@given(total=st.one_of(st.integers(1, 100), st.integers(1, 10**7)), n=st.integers(1, 5000))
def test_uniform_sampling_equals_transformers(total, n):
    from transformers.video_utils import default_sample_indices_fn
    try:
        want = default_sample_indices_fn(metadata(total), num_frames=n)
    except ValueError as e:
        assert "exceeds total_num_frames" in str(e)
        want = "error"
    got = ours_or_error(total_frames=total, num_frames=n)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.reference
@settings(max_examples=300)
@given(total=st.integers(1, 10**5), video_fps=rates, fps=rates)
def test_fps_sampling_equals_transformers(total, video_fps, fps):
    from transformers.video_processing_utils import BaseVideoProcessor
    from transformers.video_utils import default_sample_indices_fn
    processor = reference_processor()
    processor.num_frames = None  # Gemma4VideoProcessor samples by fps only with num_frames None
    try:
        want = default_sample_indices_fn(metadata(total, video_fps), fps=fps)
        np.testing.assert_array_equal(BaseVideoProcessor.sample_frames(processor, metadata(total, video_fps), fps=fps),
                                      want)
    except ValueError as e:
        assert "exceeds total_num_frames" in str(e)
        want = "error"
    got = ours_or_error(total_frames=total, fps=fps, video_fps=video_fps)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.reference
@pytest.mark.parametrize("total", [1, 31, 32, 33, 64, 100, 1000, 12345])
def test_default_sampling_equals_gemma4_video_processor(total):
    from transformers.video_processing_utils import BaseVideoProcessor
    try:
        want = BaseVideoProcessor.sample_frames(reference_processor(), metadata(total))
    except ValueError:
        with pytest.raises(InputError, match="exceeds"):
            sample_frame_indices(total)
        return
    np.testing.assert_array_equal(sample_frame_indices(total), want)


@pytest.mark.reference
def test_fps_with_the_default_num_frames_is_refused_like_transformers():
    """Gemma4VideoProcessor's preprocess fills in num_frames=32 beside a caller's fps, which its
    sample_frames refuses as mutually exclusive; tinydg refuses both given explicitly the same way."""
    from transformers.video_processing_utils import BaseVideoProcessor
    with pytest.raises(ValueError, match="mutually exclusive"):
        BaseVideoProcessor.sample_frames(reference_processor(), metadata(300, 30), num_frames=NUM_FRAMES, fps=2)
    with pytest.raises(InputError, match="mutually exclusive"):
        sample_frame_indices(300, num_frames=NUM_FRAMES, fps=2, video_fps=30)


@pytest.mark.reference
def test_the_size_rule_is_the_video_processors():
    """processing_gemma4's get_aspect_ratio_preserving_size (importable) is the video processor's (not
    importable without torchvision), compared as syntax trees."""
    def function(tree):
        name = "get_aspect_ratio_preserving_size"
        return ast.dump(next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name))
    assert function(reference_source("transformers.models.gemma4.video_processing_gemma4")) \
        == function(reference_source("transformers.models.gemma4.processing_gemma4"))


@pytest.mark.reference
@settings(max_examples=300)
@given(count=st.integers(1, 64), height=sides(), width=sides())
def test_frame_sizes_equal_transformers(count, height, width):
    pytest.importorskip("transformers")
    from transformers.models.gemma4.processing_gemma4 import Gemma4Processor, get_aspect_ratio_preserving_size
    defaults = video_processor_defaults()
    geometry = {key: defaults[key] for key in ("patch_size", "pooling_kernel_size", "max_soft_tokens")}
    assert get_aspect_ratio_preserving_size(height, width, 16, 70 * 9, 3) \
        == target_size(height, width, patch_size=16, pooling_kernel_size=3, max_soft_tokens=70)
    processor = SimpleNamespace(_merge_kwargs=lambda **kwargs: {"images_kwargs": {}, "videos_kwargs": {}},
                                image_processor=SimpleNamespace(patch_size=16, pooling_kernel_size=3,
                                                                max_soft_tokens=280),
                                video_processor=SimpleNamespace(**geometry))
    data = Gemma4Processor._get_num_multimodal_tokens(processor, video_sizes=[(count, height, width)])
    frame = np.zeros((height, width, 3), np.uint8)
    assert data.num_video_tokens == [count * frame_soft_tokens(frame)]


@pytest.mark.reference
@settings(max_examples=200)
@given(count=st.integers(1, 5000), video_fps=rates, t=st.integers(1, 70), data=st.data())
def test_prompt_text_equals_gemma4_processor(count, video_fps, t, data):
    """Gemma4Processor's text for a video, with <|video|> read as <|image|> (DiffusionGemma has no video
    token), is tinydg's video_prompt with each marker expanded as expand_images expands it."""
    pytest.importorskip("transformers")
    from transformers.models.gemma4.processing_gemma4 import Gemma4Processor
    n = data.draw(st.integers(1, min(count, 64)))
    frames = sample_video(np.zeros((count, 1, 1, 3), np.uint8), video_fps=video_fps, num_frames=n)
    indices = sample_frame_indices(count, num_frames=n)
    processor = SimpleNamespace(boi_token=BOI, eoi_token=EOI, video_token="<|video|>")
    inputs = {"num_soft_tokens_per_video": [t], "video_metadata": [metadata(count, video_fps, indices)]}
    want = Gemma4Processor.replace_video_token(processor, inputs, 0)
    assert expanded(video_prompt(frames), t) == want.replace("<|video|>", MARKER)


@pytest.mark.reference
def test_the_rescale_divisor_is_transformers():
    """Gemma4VideoProcessor fuses its rescale (1/255) into the normalization (mean 0, std 1): it subtracts
    `mean` and divides by `std` as computed below. The subtraction and division are torchvision's
    tvF.normalize, which cannot run here; the values it divides by are transformers' own."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from transformers.image_processing_backends import TorchvisionBackend
    from transformers.video_processing_utils import VideoProcessorMixin
    defaults = video_processor_defaults()
    mean, std, do_rescale = TorchvisionBackend._fuse_mean_std_and_rescale_factor(
        object(), do_normalize=defaults["do_normalize"], image_mean=tuple(defaults["image_mean"]),
        image_std=tuple(defaults["image_std"]), do_rescale=defaults["do_rescale"],
        rescale_factor=VideoProcessorMixin.rescale_factor)
    assert do_rescale is False  # no second rescale after the normalization
    assert mean.dtype == std.dtype == torch.float32
    assert mean.tolist() == [0.0] * 3 and std.tolist() == [255.0] * 3
    x = torch.arange(256).to(torch.float32)  # the uint8 frame as the processor makes it float32
    np.testing.assert_array_equal(((x - mean[0]) / std[0]).numpy(), rescale(np.arange(256, dtype=np.uint8)))
