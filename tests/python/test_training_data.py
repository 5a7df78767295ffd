"""training/make_data.py: a clip becomes its conditioning passes and its Cycles frames, at the model's
size and aligned frame for frame, written so that a finished clip is skipped on a rerun."""
import json
import os
import shutil
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "training"))
import make_data  # noqa: E402
import scenes  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("blender", path="/usr/bin:/bin") is None,
                                reason="Blender is not installed (.ci/setup installs it)")


def test_a_clip_makes_passes_and_frames_and_a_rerun_skips_it(tmp_path):
    clip = scenes.draw_clip(scenes.SPLIT_SEEDS["heldout"])
    clip["window"]["first_frame"] += 12  # three frames with motion, to keep the test short
    clip["window"]["frames"] = 3
    folder = tmp_path / "heldout" / str(clip["seed"])
    assert make_data.make_clip(clip, str(folder), samples=2, scale=2)

    conditioning, frames = torch.load(folder / "conditioning.pt"), torch.load(folder / "frames.pt")
    assert conditioning.shape == (3, len(make_data.CONDITIONING), scenes.HEIGHT, scenes.WIDTH)
    assert conditioning.dtype == torch.float16 and torch.isfinite(conditioning).all()
    assert frames.shape == (3, 3, scenes.HEIGHT, scenes.WIDTH) and frames.dtype == torch.uint8
    coverage = conditioning[:, make_data.CONDITIONING.index("A")]
    assert 0.02 < coverage.float().mean() < 0.9  # the building is in the frame, not the whole frame
    assert not torch.equal(frames[0], frames[-1])  # it moves
    record = json.loads((folder / "clip.json").read_text())
    assert record["caption"] == clip["caption"] and record["channels"] == make_data.CONDITIONING
    assert record["timing"]["total_s"] >= record["timing"]["cycles_s"] > 0

    stamp = os.path.getmtime(folder / "frames.pt")
    assert not make_data.make_clip(clip, str(folder), samples=2, scale=2)  # finished: skipped
    assert os.path.getmtime(folder / "frames.pt") == stamp
    (folder / "clip.json").unlink()  # as if killed before the end: made again
    assert make_data.make_clip(clip, str(folder), samples=2, scale=2)
