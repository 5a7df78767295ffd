"""Generate a shot: simulate a collapse, render its passes and let a Wan model render the
footage steered by the simulation; writes an MP4, an EXR sequence (beauty, AOVs, Cryptomatte)
and a sidecar to --out. Without --model it uses the embedded default model.

The command line does the same: ``derrumbe generate examples/scenes/small.json --out shot``.
"""
import argparse
import os

import derrumbe

SCENES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scenes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene", default=os.path.join(SCENES, "small.json"))
    parser.add_argument("--model", default="", help="a diffusers Wan directory (default: the embedded model)")
    parser.add_argument("--out", default="shot")
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="variations, one folder per seed")
    parser.add_argument("--preview", action="store_true", help="half size, half the steps")
    args = parser.parse_args()

    shot = derrumbe.Shot(args.scene, model=args.model, frames=17, width=160, height=96, steps=12,
                         guide={"sdedit_strength": 0.85, "flow_energy": 0.05}, output={"dir": args.out, "png": True})
    if args.seeds:
        results = shot.variations(seeds=args.seeds)
    else:
        results = [shot.preview() if args.preview else shot.render()]
    for result in results:
        frames = result.frames  # [F, 3, H, W] in [0, 1]
        print(f"{frames.shape[0]} frames of {frames.shape[3]}x{frames.shape[2]} in {result.output_dir}")
        for stage in result.stages:
            print(f"  {stage.name:13s} {'cached' if stage.reused else 'ran':6s} {stage.seconds:6.2f} s")


if __name__ == "__main__":
    main()
