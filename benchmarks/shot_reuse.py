"""Time to a new version of a shot after a camera change, an intensity change and a seed change.

Question: when an artist changes one thing, how much faster does the new version arrive than a
cold run, thanks to the stage cache? The anchor of each ratio is a cold run (empty cache) of the
same changed shot, in the same run; each warm run starts from a cache holding the base shot.
"""
import argparse
import json
import os
import shutil
import tempfile
import time

import derrumbe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMERA = [{"time": 0.0, "position": [6.0, 3.0, 26.0], "target": [0.0, 6.0, 0.0]}]
CHANGES = {"camera": {"camera": CAMERA}, "intensity": {"intensity": 0.9}, "seed": {"seed": 11}}


def timed_render(workdir, cache, settings, base):
    params = dict(base, cache_dir=cache, output={"dir": os.path.join(workdir, "out")}, progress=False)
    params.update(settings)
    start = time.perf_counter()
    result = derrumbe.Shot(**params).render()
    return time.perf_counter() - start, [s.name for s in result.stages if s.reused and s.name != "model"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene", default=os.path.join(ROOT, "examples", "scenes", "small.json"))
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    base = dict(source=args.scene, frames=args.frames, width=args.width, height=args.height, steps=args.steps)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        base_cache = os.path.join(work, "base-cache")
        base_seconds, _ = timed_render(work, base_cache, {}, base)
        for name, change in CHANGES.items():
            warm_cache = os.path.join(work, f"warm-{name}")
            shutil.copytree(base_cache, warm_cache)
            warm, reused = timed_render(work, warm_cache, change, base)
            cold, _ = timed_render(work, os.path.join(work, f"cold-{name}"), change, base)
            rows.append({"change": name, "cold_s": round(cold, 2), "warm_s": round(warm, 2),
                         "speedup": round(cold / warm, 2), "stages_reused": reused})
    print(json.dumps({"shot": base, "base_cold_s": round(base_seconds, 2), "changes": rows}, indent=2))
    for r in rows:
        print(f"{r['change']:10s} cold {r['cold_s']:7.2f} s  warm {r['warm_s']:7.2f} s  ratio {r['speedup']:.2f}x")


if __name__ == "__main__":
    main()
