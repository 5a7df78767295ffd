"""Simulates a clip drawn by training/scenes.py and renders its final frames with Blender's Cycles.

    python training/render_clip.py CLIP.json OUT_DIR [--samples 16] [--scale 2]

writes OUT_DIR/track.glb (the simulation, as Blender imports it), OUT_DIR/dust.npz (its dust on
the frames rendered), OUT_DIR/cycles.%04d.png (the clip's window, numbered by track frame) and
OUT_DIR/cycles.json (what was rendered and how long it took). Frames are rendered at `scale` times the clip's size and kept at that size; the training
reader downsamples (Debian's Blender has no denoiser, so more pixels stand in for it). A rerun
keeps the frames already there.
"""
import argparse
import json
import os
import shutil
import subprocess
import time
from typing import Any, Dict, Optional, Sequence

import derrumbe
import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
BLENDER_SCRIPT = os.path.join(HERE, "blender", "cycles_clip.py")


def blender() -> str:
    """Debian's blender, run under the system PATH (its Python must not see this one's packages)."""
    path = shutil.which("blender", path="/usr/bin:/bin")
    if path is None:
        raise RuntimeError("render_clip: Blender is not installed (apt-get install blender)")
    return path


def render_clip(clip: Dict[str, Any], out: str, samples: int = 16, scale: int = 2, mask_only: bool = False,
                frames: Optional[Sequence[int]] = None, track: Optional[derrumbe.SimTrack] = None) -> Dict[str, Any]:
    """Renders the clip's window (or the track `frames` given) into `out`; returns the record.
    `track`: the clip's simulation when the caller has it (else it is simulated here)."""
    window = clip["window"]
    frames = list(frames) if frames is not None else list(range(window["first_frame"],
                                                                 window["first_frame"] + window["frames"]))
    os.makedirs(out, exist_ok=True)
    glb, dust = os.path.join(out, "track.glb"), os.path.join(out, "dust.npz")
    start = time.perf_counter()
    if track is None:
        track = derrumbe.Scene.from_json(json.dumps(clip["scene"])).simulate(progress=False)
    simulated = time.perf_counter() - start
    if not os.path.exists(glb):
        track.to_gltf(glb + ".part")
        os.replace(glb + ".part", glb)
    with open(dust + ".part", "wb") as f:  # the dust the frames need, per track frame
        numpy.savez(f, **{f"frame{frame}": track.dust(frame).numpy() for frame in frames})
    os.replace(dust + ".part", dust)
    camera = clip["scene"]["cameras"][0]
    key = camera["keys"][0]
    name = "mask" if mask_only else "cycles"
    job = {
        "glb": glb, "pattern": os.path.join(out, name + ".%04d.png"), "fps": clip["scene"]["fps"],
        "frames": frames,
        "width": int(clip.get("width", 160)) * scale, "height": int(clip.get("height", 96)) * scale,
        "samples": samples, "camera": camera["name"], "focal_length_mm": key["focal_length_mm"],
        "sensor_mm": [key["sensor_width_mm"], key["sensor_height_mm"]],
        "materials": {m["name"]: m["look"] for m in clip["scene"]["materials"]}, "look": clip["look"],
        "mask_only": mask_only, "dust": dust if clip["scene"]["dust"]["enabled"] else None,
    }
    job_path = os.path.join(out, name + ".job.json")
    with open(job_path, "w") as f:
        json.dump(job, f, indent=1)
    start = time.perf_counter()
    result = subprocess.run([blender(), "-b", "--python", BLENDER_SCRIPT, "--", job_path], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")})
    if result.returncode != 0 or "DERRUMBE_CYCLES done" not in result.stdout:
        raise RuntimeError(f"render_clip: Blender failed ({result.returncode}):\n{result.stdout[-3000:]}"
                           f"\n{result.stderr[-3000:]}")
    record = {"seed": clip["seed"], "job": job, "simulate_s": round(simulated, 2),
              "render_s": round(time.perf_counter() - start, 2),
              "dust": {int(w[2]): int(w[4]) for w in (line.split() for line in result.stdout.splitlines())
                       if w[:1] == ["DERRUMBE_CYCLES"] and w[1:2] == ["frame"]}}
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(record, f, indent=1)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clip")
    parser.add_argument("out")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    record = render_clip(json.load(open(args.clip)), args.out, args.samples, args.scale)
    print(f"clip {record['seed']}: simulated in {record['simulate_s']} s, rendered in {record['render_s']} s")


if __name__ == "__main__":
    main()
