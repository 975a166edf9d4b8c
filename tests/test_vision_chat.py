"""Images in a chat (tinydg.chat, tinydg.Chat: tinydg.conversation.take_turn) and on the command line
(--image, and `/image PATH` in --chat), on the golden vision checkpoint weights/fixtures/vision_pool2_f32:
a tiny random DiffusionGemma with a vision tower and a character tokenizer.

The tower and the prompt's image runs are held to the reference in tests/test_vision_golden.py and
tests/test_vision_prompt.py. Here a chat's ids must be exactly the chat template's prompt with each
<|image|> marker expanded to its image's run, its turns must equal tinydg.generate on those ids, a
later turn must see the image through the cache, and every mistake a user can make with images is a
clear error. No torch needed."""

import dataclasses
import io
import os

import numpy as np
import pytest

import tinydg
from helpers import assert_second_turn_is_the_full_history, record_turns
from tinydg import cli
from tinydg.chat_format import encode_prompt
from tinydg.errors import InputError
from tinydg.image_prompt import placeholder_runs, soft_tokens_of
from tinydg.video import sample_video, video_prompt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VISION = os.path.join(ROOT, "weights", "fixtures", "vision_pool2_f32")
EMBEDDED = os.path.join(ROOT, "weights", "embedded")
SETTINGS = {"max_new_tokens": 8, "max_denoising_steps": 4}  # short turns: the ids are what is tested
MARK = "<|image|>"


@pytest.fixture(scope="module")
def model():
    return tinydg.load(VISION)


@pytest.fixture
def calls(monkeypatch):
    """Every stream call a chat turn makes: (model, input_ids, keyword arguments, Output)."""
    return record_turns(monkeypatch)


def picture(seed, height, width):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def prompt(model, text, images):
    """The ids a first turn must send: the template's prompt, each marker expanded for its image."""
    return tinydg.expand_images(model, encode_prompt(model.tokenizer, [{"role": "user", "content": text}],
                                                     thinking=False), images)


def test_a_marked_image_takes_its_place_and_the_turn_is_generate_on_those_ids(model, calls):
    image = picture(0, 20, 36)
    reply = tinydg.chat(model, f"What is {MARK} here?", images=[image], seed=0, **SETTINGS)
    (_, ids, kw, out), = calls
    expected = prompt(model, f"What is {MARK} here?", [image])
    np.testing.assert_array_equal(ids[0], expected)
    assert np.sum(ids == model.config.image_token_id) == soft_tokens_of(model, image) > 1
    assert kw["images"][0] is image
    direct = tinydg.generate(model, [expected], images=[image], seed=0, **SETTINGS)
    np.testing.assert_array_equal(direct.sequences, reply.output.sequences)
    seen, _ = tinydg.encode(model, [expected], images=[image])
    blind, _ = tinydg.encode(model, [expected])  # the placeholders as plain tokens: the image matters
    assert not np.allclose(seen, blind, atol=1e-3)


def test_images_without_markers_go_in_front_of_the_turn_in_order(model, calls):
    a, b = picture(1, 12, 12), picture(2, 30, 18)
    tinydg.chat(model, "Compare them.", images=[a, b], seed=1, **SETTINGS)
    (_, ids, _, _), = calls
    np.testing.assert_array_equal(ids[0], prompt(model, f"{MARK}{MARK}Compare them.", [a, b]))


def test_markers_in_the_history_take_the_images_of_a_first_call(model, calls):
    image = picture(3, 16, 24)
    messages = [{"role": "user", "content": f"{MARK} Remember this."}, {"role": "model", "content": "OK."},
                {"role": "user", "content": "What was it?"}]
    tinydg.chat(model, messages, images=[image], seed=2, **SETTINGS)
    (_, ids, _, _), = calls
    marked = encode_prompt(model.tokenizer, messages, thinking=False)
    np.testing.assert_array_equal(ids[0], tinydg.expand_images(model, marked, [image]))


def test_a_chat_keeps_the_image_in_the_cache(model, calls):
    image = picture(4, 24, 20)
    session = tinydg.Chat(model)
    session.send(f"{MARK} Look.", seed=3, images=[image], **SETTINGS)
    session.send("And now?", seed=4, **SETTINGS)
    first, second = calls
    assert second[2]["images"] is None  # the second call encodes no image: it reads the first from the cache
    assert not np.any(second[1] == model.config.image_token_id)
    assert session.messages[0]["content"] == f"{MARK} Look."
    assert_second_turn_is_the_full_history(model.tokenizer, first, second, images=[image])


def test_a_later_turn_can_bring_its_own_image(model, calls):
    b = picture(6, 16, 12)
    session = tinydg.Chat(model)
    session.send("Hi.", seed=5, **SETTINGS)
    session.send("What is this?", seed=6, images=[b], **SETTINGS)
    first, second = calls
    C = model.config.canvas_length
    assert not np.any(first[1] == model.config.image_token_id)
    new = second[1][0, C:]  # after the last canvas: this turn's tokens
    assert np.sum(new == model.config.image_token_id) == soft_tokens_of(model, b)
    assert second[2]["images"][0] is b


@pytest.mark.parametrize("text, images, message", [
    (f"{MARK} and {MARK}", "one", "images must be a list of images"),
    (f"Look: {MARK}", [], r"ids hold 1 image markers .* but images holds 0"),
    (f"{MARK} and {MARK}", [picture(0, 8, 8)], r"ids hold 2 image markers .* but images holds 1"),
    ("Look.", [np.zeros((4, 4), np.float32)], r"images\[0\].*uint8"),
    ("Look.", [os.path.join(ROOT, "no-such-image.png")], "no-such-image.png.*cannot be read"),
])
def test_image_mistakes_are_input_errors_that_leave_the_chat_as_it_was(model, text, images, message):
    session = tinydg.Chat(model)
    session.send("Hi.", seed=0, **SETTINGS)
    before = session.messages, session.cache
    with pytest.raises(InputError, match=message):
        session.send(text, images=images, seed=0, **SETTINGS)
    assert (session.messages, session.cache) == before


def test_a_marker_without_an_image_is_an_error_not_a_plain_token(model):
    with pytest.raises(InputError, match="1 image markers"):
        tinydg.chat(model, f"{MARK} what?", seed=0, **SETTINGS)


def test_a_checkpoint_that_cannot_read_images_says_why():
    embedded = tinydg.load(EMBEDDED)  # its untrained tower pools by 1, which the reference cannot run
    with pytest.raises(InputError, match="pooling_kernel_size is 1"):
        tinydg.chat(embedded, "sort 3 1 2", images=[picture(0, 8, 8)], seed=0)


def test_video_frames_go_in_as_images_at_the_video_budget(model, calls):
    """Frames (tinydg.video.VideoFrame) fill the markers of video_prompt, each at the video processor's
    budget; a plain image beside them keeps the image budget. Here the image budget is raised to 140 so
    that the two differ."""
    wider = dataclasses.replace(model, processor_config=dataclasses.replace(
        model.processor_config, image_processor=dataclasses.replace(model.processor_config.image_processor,
                                                                    max_soft_tokens=140)))
    clip = np.stack([picture(10 + i, 40, 56) for i in range(12)])  # [F, H, W, 3]
    frames = sample_video(clip, video_fps=4, num_frames=3)  # frames 0, 4, 8: at 0, 1 and 2 seconds
    still = picture(20, 40, 56)
    text = video_prompt(frames) + " and " + MARK + " What changed?"
    assert text.startswith(f"00:00 {MARK} 00:01 {MARK} 00:02 {MARK}")
    tinydg.chat(wider, text, images=[*frames, still], seed=0, **SETTINGS)
    (_, ids, _, _), = calls
    runs = [last - first + 1 for _, first, last in placeholder_runs(ids, model.config.image_token_id)]
    assert runs == [soft_tokens_of(wider, f) for f in frames] + [soft_tokens_of(wider, still)]
    assert runs[0] == 63 and runs[-1] == 140  # the same 40 x 56 size: 63 soft tokens as a frame, 140 as an image


# ---------------------------------------------------------------- the command line

def png(tmp_path, name, image):
    Image = pytest.importorskip("PIL.Image")
    path = str(tmp_path / name)
    Image.fromarray(image).save(path)
    return path


def run_cli(*argv, stdin=""):
    out = io.StringIO()
    code = cli.main(["--weights", VISION, "--plain", "--max-new-tokens", "8", "--steps", "4", *argv],
                    stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


def test_image_on_the_command_line_is_the_api_turn(model, calls, tmp_path):
    image = picture(7, 18, 26)
    path = png(tmp_path, "a.png", image)
    code, text = run_cli("--seed", "0", "--image", path, "What is this?")
    assert code == 0, text
    tinydg.chat(model, "What is this?", images=[image], seed=0, **SETTINGS)
    (_, cli_ids, _, cli_out), (_, api_ids, _, api_out) = calls
    np.testing.assert_array_equal(cli_ids, api_ids)  # the PNG holds the same pixels
    np.testing.assert_array_equal(cli_out.sequences, api_out.sequences)


def test_chat_attaches_an_image_to_the_next_turn(model, calls, tmp_path):
    path = png(tmp_path, "b.png", picture(8, 14, 14))
    missing = str(tmp_path / "missing.png")
    code, text = run_cli("--seed", "1", "--chat", stdin=f"/image {missing}\n/image {path}\nfirst\nsecond\n")
    assert code == 0, text
    assert f"(image {path} attached to the next turn: {soft_tokens_of(model, path)} soft tokens)" in text
    first, second = calls
    assert first[2]["images"] == [path] and second[2]["images"] is None  # the missing file was not attached
    assert np.sum(first[1] == model.config.image_token_id) == soft_tokens_of(model, path)


def test_chat_reports_an_image_it_cannot_attach_and_goes_on(capsys, tmp_path, calls):
    code, _ = run_cli("--seed", "1", "--chat", stdin=f"/image {tmp_path / 'missing.png'}\n/image\nhello\n")
    assert code == 0
    err = capsys.readouterr().err
    assert "missing.png" in err and "cannot be read" in err
    assert "/image needs a path" in err
    assert len(calls) == 1


def test_image_errors_on_the_command_line_are_one_line_and_status_2(capsys, tmp_path):
    code = cli.main(["--image", png(tmp_path, "c.png", picture(9, 8, 8)), "sort 3 1 2"], stdin=io.StringIO(),
                    stdout=io.StringIO())
    assert code == cli.EXIT_USAGE
    assert "the default model reads no images" in capsys.readouterr().err
    code, _ = run_cli("--image", str(tmp_path / "nothing.png"), "What is this?")
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "nothing.png" in err and len(err.splitlines()) == 1
