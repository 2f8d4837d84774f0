"""`genie generate` from every kind of prompt, and the errors a user can cause."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genie.cli import main
from genie.data.video import VideoWriter
from genie.errors import GenieError
from genie.generate import parse_actions


def generate(world, *args) -> int:
    return main(["generate", "--world", str(world), "--device", "cpu", *map(str, args)])


@pytest.fixture(scope="module")
def prompt_files(tiny_world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompts")
    clip = np.load(sorted((tiny_world / "prompts").glob("*.npy"))[0])
    Image.fromarray(clip[0]).resize((128, 96)).save(folder / "frame.png")  # other size: resized
    with VideoWriter(folder / "clip.mp4", fps=15) as writer:
        for frame in clip:
            writer.write(frame)
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "broken.mp4").write_bytes(b"not a video")
    (folder / "broken.npy").write_bytes(b"not an array")
    return folder


@pytest.mark.parametrize("prompt", ["frame.png", "clip.mp4"])
def test_generate_from_files(tiny_world, prompt_files, tmp_path, prompt):
    out = tmp_path / "out.npy"
    assert generate(tiny_world, "--prompt", prompt_files / prompt, "--actions", "0,2x3",
                    "--out", out, "--scale", 1) == 0
    frames = np.load(out)
    prompt_len = 1 if prompt.endswith(".png") else 4
    assert frames.shape == (prompt_len + 4, 64, 64, 3) and frames.dtype == np.uint8


def test_sampler_overrides_reach_the_sampler_and_the_recipe(tiny_world, prompt_files, tmp_path):
    import json

    out = tmp_path / "out.npy"
    assert generate(tiny_world, "--prompt", prompt_files / "clip.mp4", "--actions", "1x3",
                    "--sampling-steps", 2, "--temperature", 0, "--confidence-noise", 0.5,
                    "--top-p", 0.8, "--out", out, "--scale", 1) == 0
    sampler = json.loads(out.with_suffix(".json").read_text())["sampler"]
    assert (sampler["steps"], sampler["temperature"], sampler["confidence_noise"],
            sampler["top_p"]) == (2, 0, 0.5, 0.8)


def test_generate_writes_a_video_from_a_dataset_episode(tiny_world, coinrun_dataset, tmp_path):
    import av

    out = tmp_path / "clip.mp4"
    assert generate(tiny_world, "--prompt", f"{coinrun_dataset}:0", "--frames", 6,
                    "--out", out) == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.height, stream.width) == (256, 256)  # --scale 4
        assert sum(1 for _ in container.decode(stream)) == 4 + 6


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt", "missing.png"], "--prompt missing.png does not exist"),
    (["--prompt", "{dir}/broken.png"], "could not be read"),
    (["--prompt", "{dir}/broken.mp4"], "broken.mp4 is not a readable video (Invalid data"),
    (["--prompt", "{dir}/broken.npy"], "broken.npy is not a readable .npy clip"),
    (["--prompt", "{data}:abc"], "abc: the episode after the colon must be a number"),
    (["--actions", "1,99"], "actions are 0..7"),
    (["--actions", ""], "--actions is empty: give latent actions such as 0,0,3x4"),
    (["--actions-from", "missing.mp4"], "--actions-from missing.mp4 does not exist"),
    (["--actions-from", "{dir}/broken.mp4"], "--actions-from {dir}/broken.mp4 is not a readable"),
    (["--actions-from", "{dir}/clip.mp4", "--frames", "40"],
     "gives 3 actions, fewer than --frames 40"),
    (["--random-actions", "3", "--frames", "5"], "both say how many frames to make"),
    (["--side-by-side"], "world's own prompts lack: give --prompt with a video or a dataset"),
    (["--prompt", "{dir}/frame.png", "--side-by-side"], "needs the real continuation"),
    (["--actions", "left"], "is not an action number"),
])
def test_bad_input_is_one_clear_line(tiny_world, prompt_files, coinrun_dataset, tmp_path, capsys,
                                     args, message):
    args = [a.format(dir=prompt_files, data=coinrun_dataset) for a in args]
    assert generate(tiny_world, *args, "--out", tmp_path / "x.mp4") == 2
    err = capsys.readouterr().err
    assert message.format(dir=prompt_files) in err and err.count("\n") == 1, err
    assert "Errno" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_actions_repeat_in_turn_for_the_frames_asked(tiny_world, tmp_path):
    import json

    out = tmp_path / "out.npy"
    assert generate(tiny_world, "--actions", "1,2", "--frames", 5, "-o", out) == 0
    assert json.loads(out.with_suffix(".json").read_text())["actions"] == [1, 2, 1, 2, 1]
    assert len(np.load(out)) == 4 + 5


def test_steps_is_not_an_alias_of_sampling_steps(tmp_path, capsys):
    # In play --steps counts frames; here it would silently have set the sampling steps.
    with pytest.raises(SystemExit) as exit:
        main(["generate", "--steps", "100", "-o", str(tmp_path / "x.mp4")])
    assert exit.value.code == 2 and "unrecognized arguments: --steps" in capsys.readouterr().err


def test_parse_actions_is_zero_based_with_repeats():
    assert parse_actions("0,3x2, 7", 8) == [0, 3, 3, 7]
    with pytest.raises(GenieError):
        parse_actions("8", 8)


def test_side_by_side_from_the_prompt_video_with_its_own_actions(tiny_world, coinrun_dataset,
                                                                 tmp_path):
    import json

    from PIL import Image

    out = tmp_path / "cmp.mp4"
    spec = f"{coinrun_dataset}:0"
    assert generate(tiny_world, "--prompt", spec, "--prompt-frames", 2, "--actions-from", spec,
                    "--frames", 5, "--side-by-side", "--gif", "-o", out, "--scale", 1,
                    "--seed", 3) == 0
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["prompt"] == spec and recipe["seed"] == 3 and recipe["prompt_frames"] == 2
    assert len(recipe["actions"]) == 5 and recipe["sampler"]["steps"] >= 1
    gif = Image.open(out.with_suffix(".gif"))
    assert gif.size == (64 * 2 + 2, 64) and gif.is_animated  # real | bar | generated
    # The recipe reproduces the clip: same actions, same seed, same frames.
    again = tmp_path / "again.npy"
    actions = ",".join(map(str, recipe["actions"]))
    assert generate(tiny_world, "--prompt", spec, "--prompt-frames", 2, "--actions", actions,
                    "--seed", 3, "-o", again, "--scale", 1) == 0
    first = tmp_path / "first.npy"
    assert generate(tiny_world, "--prompt", spec, "--prompt-frames", 2, "--actions-from", spec,
                    "--frames", 5, "--seed", 3, "-o", first, "--scale", 1) == 0
    assert np.array_equal(np.load(again), np.load(first))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--fps", "-5", "'-5' is not a frame rate"), ("--fps", "0", "'0' is not a frame rate"),
    ("--fps", "nan", "'nan' is not a frame rate"), ("--fps", "fast", "'fast' is not a frame"),
    ("--top-p", "2", "argument --top-p: '2' is not a share of the probability"),
    ("--temperature", "-0.5", "argument --temperature: '-0.5' is not a number of at least 0"),
    ("--confidence-noise", "-1", "argument --confidence-noise: '-1' is not a number of at"),
])
def test_bad_numbers_are_refused_before_any_frame(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit:  # refused while parsing: no world is even loaded
        main(["generate", option, value, "-o", str(tmp_path / "x.mp4")])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())


def test_a_fractional_frame_rate_is_written_exactly(tiny_world, tmp_path):
    import json
    from fractions import Fraction

    import av

    out = tmp_path / "slow.mp4"
    assert generate(tiny_world, "--actions", "1", "--fps", 7.5, "-o", out, "--scale", 1) == 0
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == Fraction(15, 2)
    assert json.loads(out.with_suffix(".json").read_text())["fps"] == 7.5


@pytest.mark.parametrize("name", ["x.json", "x.txt", "x.mkv", "x"])
def test_only_the_formats_written_are_accepted(tmp_path, capsys, name):
    with pytest.raises(SystemExit) as exit:
        main(["generate", "-o", str(tmp_path / name)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "is not a clip name: end it in .mp4 or .gif" in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_the_recipe_never_replaces_a_file_that_is_not_one(coinrun_dataset, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(coinrun_dataset, data)
    index = (data / "index.json").read_text()
    assert main(["generate", "-o", str(data / "index.mp4")]) == 2
    err = capsys.readouterr().err
    assert "index.json is not a genie recipe" in err and err.count("\n") == 1
    assert (data / "index.json").read_text() == index and not (data / "index.mp4").exists()


def test_npy_holds_the_frames_at_the_worlds_size(tiny_world, tmp_path):
    out = tmp_path / "frames.npy"
    assert generate(tiny_world, "--actions", "1,2", "-o", out) == 0  # --scale 4 is for videos
    frames = np.load(out)
    assert frames.shape == (4 + 2, 64, 64, 3) and frames.dtype == np.uint8
    # The clip's own recipe from the first run is no obstacle: the same clip is made again.
    assert generate(tiny_world, "--actions", "1,2", "-o", out) == 0
    assert np.array_equal(np.load(out), frames)
