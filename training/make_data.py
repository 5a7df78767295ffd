"""Makes the default model's data set: every clip's conditioning passes and its Cycles frames.

    python training/make_data.py --out data --train 320 --heldout 16 [--workers 2]

For each clip drawn by training/scenes.py this writes data/<split>/<seed>/:
  conditioning.pt  float16 [F, C, H, W]: derrumbe's passes over the clip's window at the model's
                   size, channels CONDITIONING (proxy shading, inverse depth, coverage, dust, flow)
  frames.pt        uint8 [F, 3, H, W]: the Cycles frames, area-downsampled to the model's size
  clip.json        the clip (scene, look, caption) with the seconds each part took; written
                   last, so a clip folder with it is complete and a rerun skips it
Clips run in `workers` processes (one per core: Blender's start-up and the simulation use one).
"""
import argparse
import json
import multiprocessing
import os
import time
from typing import Any, Dict

import derrumbe
import numpy
import torch
from PIL import Image

import render_clip
import scenes

# derrumbe's AOV channels, with depth stored as inverse depth 1 / Z: finite everywhere (0 where
# nothing was hit, Z = inf there) and finest near the camera, where the detail is.
PASSES = ["R", "G", "B", "Z", "A", "dust", "backward.u", "backward.v"]
CONDITIONING = [name if name != "Z" else "inverse_depth" for name in PASSES]


def make_clip(clip: Dict[str, Any], folder: str, samples: int = 16, scale: int = 2) -> bool:
    """Makes one clip's files in `folder`; False when they were already there."""
    done = os.path.join(folder, "clip.json")
    if os.path.exists(done):
        return False
    start = time.perf_counter()
    window = clip["window"]
    first, count = window["first_frame"], window["frames"]
    track = derrumbe.Scene.from_json(json.dumps(clip["scene"])).simulate(progress=False)
    aovs = track.render(0, first, first + count, width=scenes.WIDTH, height=scenes.HEIGHT)
    passes = derrumbe.aovs_to_tensor(aovs, PASSES)
    depth = PASSES.index("Z")
    passes[:, depth] = 1.0 / passes[:, depth]  # 1 / inf = 0
    conditioning = passes.to(torch.float16)
    proxy_s = time.perf_counter() - start
    record = render_clip.render_clip(clip, os.path.join(folder, "cycles"), samples=samples, scale=scale, track=track)
    frames = torch.stack([downsampled(os.path.join(folder, "cycles", f"cycles.{f:04d}.png"))
                          for f in range(first, first + count)])
    save(conditioning, os.path.join(folder, "conditioning.pt"))
    save(frames, os.path.join(folder, "frames.pt"))
    timing = {"proxy_s": round(proxy_s, 2), "cycles_s": record["render_s"],
              "total_s": round(time.perf_counter() - start, 2)}
    with open(done + ".part", "w") as f:
        json.dump(dict(clip, channels=CONDITIONING, timing=timing), f, indent=1)
    os.replace(done + ".part", done)
    return True


def downsampled(png: str) -> torch.Tensor:
    """A Cycles frame at the model's size (box filter over the render's extra pixels), uint8 [3, H, W]."""
    image = Image.open(png).convert("RGB").resize((scenes.WIDTH, scenes.HEIGHT), Image.BOX)
    return torch.from_numpy(numpy.asarray(image).copy()).permute(2, 0, 1)


def save(tensor: torch.Tensor, path: str) -> None:
    torch.save(tensor.contiguous(), path + ".part")
    os.replace(path + ".part", path)


def make_split(out: str, split: str, count: int, workers: int = 2, samples: int = 16, scale: int = 2) -> int:
    """Makes `count` clips of `split` under out/split; returns how many were new."""
    seeds = range(scenes.SPLIT_SEEDS[split], scenes.SPLIT_SEEDS[split] + count)
    jobs = [(scenes.draw_clip(seed), os.path.join(out, split, str(seed)), samples, scale) for seed in seeds]
    if workers <= 1:
        return sum(make_clip(*job) for job in jobs)
    # One core a worker: a spawned worker does not inherit this process's torch thread count.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return sum(pool.starmap(make_clip, jobs, chunksize=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--heldout", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    for split, count in [("heldout", args.heldout), ("train", args.train)]:
        start = time.perf_counter()
        new = make_split(args.out, split, count, args.workers, args.samples, args.scale)
        print(f"{split}: {new} new clips of {count} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
