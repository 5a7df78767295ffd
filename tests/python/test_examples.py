"""The README's main job runs: the whole pipeline on the embedded default model."""
import os
import subprocess
import sys

import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_generate_shot_writes_the_frames(tmp_path):
    out = tmp_path / "shot"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "python", "generate_shot.py"), "--cache", str(tmp_path / "model"),
         "--out", str(out), "--frames", "9", "--steps", "4", "--width", "64", "--height", "48"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert pngs == [f"frame.{f:04d}.png" for f in range(9)]
    frame = torchvision.io.read_image(str(out / pngs[4]))
    assert frame.shape == (3, 48, 64) and frame.float().std() > 0
    assert (out / "aov.0000.exr").stat().st_size > 0
