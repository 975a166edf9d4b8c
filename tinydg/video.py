"""Video as Gemma 4 frames it: frames sampled from a clip, each one an image with a `mm:ss` timestamp in
front of it in the prompt.

transformers' DiffusionGemma silently ignores video inputs (`pixel_values_videos`), so there is no
reference for what the model does with a video. tinydg therefore feeds the frames as images, the way
Gemma 4's processor lays a video out (transformers 5.23, models/gemma4/processing_gemma4.py,
video_processing_gemma4.py, video_utils.py):

    clip [F, H, W, 3] uint8, its fps
      -> n frames at indices arange(n) F // n              (`sample_frame_indices`; n = 32 by default)
      -> each frame at seconds = index / fps                (`VideoFrame`)
      -> prompt text  "00:00 <|image|> 00:01 <|image|> ..."  (`video_prompt`: "mm:ss " + one marker per
                                                             frame, joined by " ")
      -> each marker expands to <|image> <|image|> x t <image|>, with t the frame's soft tokens at the
         video budget (`frame_soft_tokens`, 70 by default instead of the image's 280)

The frames go in as images (generate's `images=` list, one per marker, in order), each processed with
the video processor's budget, `model.processor_config.video_processor.max_soft_tokens` (70 unless
processor_config.json says otherwise), instead of the image budget. Each frame's placeholders form their
own run between the timestamp texts, so each frame is its own bidirectional block in the encoder.

What differs from Gemma 4's video path, on purpose or by necessity:
- the placeholder token: Gemma 4 fills a frame with <|video|> (its processor adds that token to the
  tokenizer); DiffusionGemma has no video token, so a frame's run is <|image|> like an image's;
- the resize: the video processor resizes with torchvision (antialiased bicubic on uint8), tinydg with
  its Pillow-exact resize (tinydg.resample), as for images; torchvision differs from Pillow by up to
  2/255 on a few pixels;
- the rescale agrees: the video processor divides float32 x by float32 255 (its rescale fused into
  a normalization with mean 0 and std 1), and tinydg.image_processor.rescale computes exactly that,
  which is also the image path's float32(float64(x) / 255) for all 256 values.

Sampling follows transformers' defaults: Gemma4VideoProcessor asks for num_frames = 32 and refuses a
clip with fewer frames; `fps=` samples that many frames per second of the clip instead (transformers'
`default_sample_indices_fn`; Gemma4VideoProcessor refuses fps with its default num_frames as "mutually
exclusive" and samples by fps only when its num_frames is set to None). The timestamps need the clip's
frame rate: transformers falls back to 24 with a warning when it has none; here video_fps is required.

Letters: F frames in the clip, n sampled frames, H, W a frame's height and width, t a frame's soft tokens.
"""

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError, is_int, shown
from .image_processor import check_budget, num_soft_tokens, process_image

NUM_FRAMES = 32  # Gemma4VideoProcessor.num_frames: frames sampled from a clip unless told otherwise
VIDEO_SOFT_TOKENS = 70  # Gemma4VideoProcessor.max_soft_tokens: the budget of one frame
MARKER = "<|image|>"  # Gemma 4's image token: where one image (here one frame) sits in the prompt text


@dataclass(frozen=True, eq=False)
class VideoFrame:
    """One sampled frame: its pixels and when it is shown in the clip. An image at the video budget."""
    pixels: np.ndarray  # [H, W, 3] uint8
    seconds: float  # index / video_fps


# ---- which frames: the sampling -----------------------------------------------------------------------

def sample_frame_indices(total_frames, *, num_frames=None, fps=None, video_fps=None):
    """The indices [n] int64 of the frames Gemma 4's video processor keeps from a clip of total_frames:

        n       = num_frames                                   (32 when neither num_frames nor fps is given)
                | max(1, int(total_frames / video_fps * fps))  (fps: frames per second of the clip to keep;
                                                                video_fps: the clip's own frame rate)
        indices = arange(n) total_frames // n                  (uniform, starting at frame 0)

    num_frames and fps are mutually exclusive, and n may not exceed total_frames: transformers refuses
    both too (ValueError), tinydg raises InputError. num_frames = total_frames keeps every frame."""
    _check_int("total_frames", total_frames)
    if num_frames is not None and fps is not None:
        raise InputError(f"num_frames ({shown(num_frames)}) and fps ({shown(fps)}) are mutually exclusive: "
                         "sample a fixed number of frames or a number per second, not both")
    if video_fps is not None:
        _check_rate("video_fps", video_fps)
    if fps is not None:
        _check_rate("fps", fps)
        if video_fps is None:
            raise InputError(f"fps={shown(fps)} samples frames per second of the clip, which needs the clip's "
                             "own frame rate: pass video_fps")
        wanted = total_frames / video_fps * fps  # the clip's seconds times the frames per second
        n = max(1, int(wanted)) if math.isfinite(wanted) else math.inf
        if n > total_frames:
            raise InputError(f"fps={shown(fps)} asks for {wanted:.6g} frames of a clip of {total_frames} frames at "
                             f"video_fps={shown(video_fps)}: lower fps to video_fps or less")
    else:
        n = NUM_FRAMES if num_frames is None else num_frames
        _check_int("num_frames", n)
        if n > total_frames:
            raise InputError(f"num_frames={n}{' (the default)' if num_frames is None else ''} exceeds the clip's "
                             f"{total_frames} frames: pass num_frames <= {total_frames}, or fps")
    return np.arange(n, dtype=np.int64) * total_frames // n  # [n]


def sample_video(frames, *, video_fps, num_frames=None, fps=None):
    """A clip -> its sampled frames [VideoFrame] (pixels, seconds = index / video_fps), in order.
    frames: an array [F, H, W, 3] uint8 or a list of F arrays [H, W, 3] uint8 of one size; video_fps:
    the clip's frame rate. num_frames, fps: the sampling (`sample_frame_indices`)."""
    count = _check_frames(frames)
    _check_rate("video_fps", video_fps)
    indices = sample_frame_indices(count, num_frames=num_frames, fps=fps, video_fps=video_fps)
    return [VideoFrame(frames[i], float(i / video_fps)) for i in indices]  # i: np.int64, as in transformers


# ---- the prompt: timestamps and markers ---------------------------------------------------------------

def timestamp(seconds):
    """seconds -> "mm:ss", as Gemma 4's processor writes it: whole minutes (two digits or more; no hours)
    and whole seconds within the minute, both rounded down. 75.9 -> "01:15", 3600 -> "60:00"."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) \
            or not 0 <= seconds < math.inf:
        raise InputError(f"seconds must be a finite number >= 0, got {shown(seconds)}")
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def video_prompt(frames, marker=MARKER):
    """The prompt text of a video: "mm:ss <marker>" per frame, joined by " ", as Gemma 4's processor lays
    a video out. frames: [VideoFrame] (sample_video). Each marker is one image of generate's `images=`
    list, and tinydg.image_prompt.expand_images makes it <|image> <|image|> x t <image|>."""
    if not isinstance(frames, (list, tuple)) or not frames:
        raise InputError(f"frames must be a non-empty list of VideoFrame (tinydg.video.sample_video), "
                         f"got {shown(frames) if isinstance(frames, (list, tuple)) else type(frames).__name__}")
    for i, frame in enumerate(frames):
        if not isinstance(frame, VideoFrame):
            raise InputError(f"frames[{i}] must be a VideoFrame (tinydg.video.sample_video), "
                             f"got {type(frame).__name__}")
    return " ".join(f"{timestamp(frame.seconds)} {marker}" for frame in frames)


# ---- the pixels: each frame an image at the video budget ----------------------------------------------

def frame_soft_tokens(frame, *, patch_size=16, pooling_kernel_size=3, max_soft_tokens=VIDEO_SOFT_TOKENS):
    """The soft tokens t of one frame (a VideoFrame or its [H, W, 3] pixels) at the video budget; every
    frame of a clip has the same t, and a clip of n frames takes n t placeholders."""
    height, width = _pixels(frame).shape[:2]
    check_budget(max_soft_tokens)
    return num_soft_tokens(height, width, patch_size=patch_size, pooling_kernel_size=pooling_kernel_size,
                           max_soft_tokens=max_soft_tokens)


def process_frame(frame, *, patch_size=16, pooling_kernel_size=3, max_soft_tokens=VIDEO_SOFT_TOKENS):
    """One frame -> tinydg.image_processor.ProcessedImage (patches [N, p p 3], positions [N, 2], t) at the
    video budget: the image processor's resize to sides that are multiples of k p within
    max_soft_tokens k^2 patches, the float32 x / 255 rescale, and the patches."""
    return process_image(_pixels(frame), patch_size=patch_size, pooling_kernel_size=pooling_kernel_size,
                         max_soft_tokens=max_soft_tokens)


# ---- checks -------------------------------------------------------------------------------------------

def _check_frames(frames):
    """The number of frames F of a clip, or an InputError naming `frames`."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
            raise InputError(f"frames must be a [frames, height, width, 3] uint8 array (RGB), "
                             f"got shape {frames.shape} {frames.dtype}")
        return len(frames)
    if not isinstance(frames, (list, tuple)) or not frames:
        raise InputError(f"frames must be a [frames, height, width, 3] uint8 array or a non-empty list of "
                         f"[height, width, 3] uint8 arrays, got {type(frames).__name__}"
                         f"{' (empty)' if isinstance(frames, (list, tuple)) else ''}")
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 \
                or frame.dtype != np.uint8 or 0 in frame.shape:
            got = f"shape {frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise InputError(f"frames[{i}] must be a [height, width, 3] uint8 array (RGB), got {got}")
        if frame.shape != frames[0].shape:
            raise InputError(f"frames[{i}] is {frame.shape[0]} x {frame.shape[1]} pixels but frames[0] is "
                             f"{frames[0].shape[0]} x {frames[0].shape[1]}: the frames of a clip share one size")
    return len(frames)


def _pixels(frame):
    """A VideoFrame or [H, W, 3] uint8 array -> the [H, W, 3] array, or an InputError naming `frame`."""
    pixels = frame.pixels if isinstance(frame, VideoFrame) else frame
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3 \
            or pixels.dtype != np.uint8 or 0 in pixels.shape:
        got = f"shape {pixels.shape} {pixels.dtype}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise InputError(f"frame must be a VideoFrame or a [height, width, 3] uint8 array, got {got}")
    return pixels


def _check_int(name, value):
    if not is_int(value) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {shown(value)}")


def _check_rate(name, value):
    """A frame rate: a finite number > 0 (transformers: positive_any_number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 < value < math.inf:
        raise InputError(f"{name} must be a finite number > 0 (frames per second), got {shown(value)}")
