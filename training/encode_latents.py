"""Encodes every clip with the trained VAE, once, for the transformer run: the Cycles frames
and the proxy render as normalized posterior means (what derrumbe's shot computes for its
proxy and SDEdit latents), with the caption.

    python training/encode_latents.py --data data --vae runs/vae/vae --out runs/latents

Writes OUT/<split>/<seed>.pt = {"latents", "control", "caption"} clip by clip (resumable: a
rerun skips finished clips). It uses derrumbe's native VAE, the one the shot encodes with.
Its own run: the two videos of a clip, encoded in one batch, take about 5 s on the two cores
(27 minutes for the 316 clips), which would not fit beside the transformer's training in two hours.
"""
import argparse
import os
import time

import torch

import common
import derrumbe


@torch.no_grad()
def encode_split(vae, data: str, split: str, out: str) -> int:
    """Encodes the clips of `split` not yet under out/split; returns how many were new."""
    new = 0
    for folder in common.clip_folders(data, split):
        path = os.path.join(out, split, os.path.basename(folder) + ".pt")
        if os.path.exists(path):
            continue
        clip = common.load_clip(folder)
        both = vae.encode(torch.cat([common.to_vae(clip["frames"]), common.to_vae(clip["proxy"])]))
        item = {"latents": both[0].clone(), "control": both[1].clone(), "caption": clip["clip"]["caption"]}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(item, path + ".part")
        os.replace(path + ".part", path)
        new += 1
    return new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--vae", default="runs/vae/vae")
    parser.add_argument("--out", default="runs/latents")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not common.clip_folders(args.data, "train"):
        raise SystemExit(f"no training clips under {args.data}/train (run training/make_data.py)")
    vae = derrumbe.WanVae.load(args.vae)
    for split in ("heldout", "train"):
        start = time.perf_counter()
        new = encode_split(vae, args.data, split, args.out)
        print(f"{split}: {new} clips encoded in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
