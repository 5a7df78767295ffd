"""training/scenes.py: the clips the default model trains on are valid derrumbe scenes, deterministic,
captioned from their parameters, with motion inside their window, and split by disjoint seeds."""
import json
import os
import sys

import derrumbe
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "training"))
import scenes  # noqa: E402


def scene_of(clip):
    return derrumbe.Scene.from_json(json.dumps(clip["scene"]))


def test_every_drawn_clip_is_a_valid_scene_and_covers_every_event():
    events, moves, looks = set(), set(), set()
    for seed in list(range(0, 120)) + list(range(scenes.SPLIT_SEEDS["heldout"], scenes.SPLIT_SEEDS["heldout"] + 16)):
        clip = scenes.draw_clip(seed)
        scene = scene_of(clip)  # raises on any invalid field
        window = clip["window"]
        assert window["frames"] == 33 and window["first_frame"] + window["frames"] <= scene.num_frames
        events.add(clip["scene"]["triggers"][0]["type"])
        moves.add(clip["look"]["camera_move"])
        looks.add((clip["scene"]["buildings"][0]["material"], clip["look"]["time_of_day"]))
    assert events == set(scenes.EVENTS) and moves == set(scenes.MOVES)
    assert len(looks) == len(scenes.MATERIALS) * len(scenes.TIMES_OF_DAY)


def test_clips_are_deterministic_and_captions_name_what_was_drawn():
    assert scenes.draw_clip(42) == scenes.draw_clip(42)
    assert scenes.draw_clip(42)["scene"] != scenes.draw_clip(43)["scene"]
    for seed in range(20):
        clip = scenes.draw_clip(seed)
        material = clip["scene"]["buildings"][0]["material"]
        assert scenes.MATERIALS[material]["words"] in clip["caption"]
        assert clip["look"]["time_of_day"] in clip["caption"]
        assert f"{clip['scene']['buildings'][0]['floors']}-storey" in clip["caption"]


def test_the_clip_window_has_motion_in_it():
    clip = scenes.draw_clip(5)
    track = scene_of(clip).simulate(progress=False)
    first, frames = clip["window"]["first_frame"], clip["window"]["frames"]
    positions = track.poses[first:first + frames, :, 4:]
    moved = (positions[-1] - positions[0]).norm(dim=-1)
    assert (moved > 0.5).sum() >= 5  # pieces fell within the 33 frames the model sees


def test_splits_are_disjoint_and_writing_resumes(tmp_path):
    train = set(range(scenes.SPLIT_SEEDS["train"], scenes.SPLIT_SEEDS["train"] + 320))
    heldout = set(range(scenes.SPLIT_SEEDS["heldout"], scenes.SPLIT_SEEDS["heldout"] + 16))
    assert not train & heldout
    assert scenes.write_clips(str(tmp_path), "heldout", 3) == 3
    (tmp_path / "heldout" / f"{scenes.SPLIT_SEEDS['heldout'] + 1}.json").unlink()
    assert scenes.write_clips(str(tmp_path), "heldout", 3) == 1  # only the missing clip is drawn again
    assert sorted(os.listdir(tmp_path / "heldout")) == sorted(f"{s}.json" for s in sorted(heldout)[:3])
    with pytest.raises(KeyError):
        scenes.write_clips(str(tmp_path), "validation", 1)
