"""training/render_clip.py: Cycles renders a drawn clip through Blender's own glTF importer, from the
camera derrumbe's proxy renders from (the pieces' coverage agrees), with the simulation's dust, and
light and texture the proxy does not have."""
import json
import os
import shutil
import sys

import derrumbe
import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "training"))
import render_clip  # noqa: E402
import scenes  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("blender", path="/usr/bin:/bin") is None,
                                reason="Blender is not installed (.ci/setup installs it)")


def coverage_iou(ours, png):
    theirs = torch.from_numpy(np.array(Image.open(png))[..., 3] > 127)
    return ((ours & theirs).sum() / (ours | theirs).sum()).item()


def test_cycles_sees_the_proxy_camera_and_adds_what_the_proxy_lacks(tmp_path):
    clip = scenes.draw_clip(4)  # an orbiting camera and a charge: pieces and camera both move
    assert clip["look"]["camera_move"] == "orbit" and clip["scene"]["triggers"][0]["type"] == "charge"
    last = clip["window"]["first_frame"] + clip["window"]["frames"] - 1
    frames = [clip["window"]["first_frame"], last]
    render_clip.render_clip(clip, str(tmp_path), scale=1, mask_only=True, frames=frames)
    record = render_clip.render_clip(clip, str(tmp_path), samples=4, scale=1, frames=frames)
    assert record["render_s"] > 0 and os.path.exists(tmp_path / "cycles.json")

    track = derrumbe.Scene.from_json(json.dumps(clip["scene"])).simulate(progress=False)
    coverage = {}
    for frame in frames:
        aovs = track.render(0, frame, frame + 1, width=160, height=96, dust=False)
        coverage[frame] = derrumbe.aovs_to_tensor(aovs, ["A"])[0, 0] > 0.5
        assert coverage[frame].sum() > 200
        assert coverage_iou(coverage[frame], tmp_path / f"mask.{frame:04d}.png") > 0.97
    assert (coverage[frames[0]] ^ coverage[last]).sum() > 100  # the frames differ: not a check on a still
    assert record["dust"] == {f: track.dust(f).shape[0] for f in frames} and record["dust"][last] > 0

    beauty = np.array(Image.open(tmp_path / f"cycles.{last:04d}.png")).astype(np.float32) / 255
    assert beauty.shape == (96, 160, 3)
    sky, street = beauty[:10].mean(axis=(0, 1)), beauty[-10:].mean(axis=(0, 1))
    assert sky[2] > street[2] and beauty.std() > 0.05  # a lit scene with a sky, not a flat proxy


def test_a_rerun_keeps_finished_frames_and_a_broken_job_is_a_clear_error(tmp_path):
    clip = scenes.draw_clip(0)
    frame = clip["window"]["first_frame"]
    render_clip.render_clip(clip, str(tmp_path), samples=1, scale=1, frames=[frame])
    done = tmp_path / f"cycles.{frame:04d}.png"
    stamp = os.path.getmtime(done)
    render_clip.render_clip(clip, str(tmp_path), samples=1, scale=1, frames=[frame])
    assert os.path.getmtime(done) == stamp
    (tmp_path / "track.glb").write_bytes(b"glTF not really")
    with pytest.raises(RuntimeError, match="Blender failed"):
        render_clip.render_clip(clip, str(tmp_path), samples=1, scale=1, frames=[frame + 1])
