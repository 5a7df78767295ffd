"""Renderer throughput: frames per second for all AOVs of a ~2,000-piece collapse.

Question: how fast does derrumbe render every AOV (depth, ids, normals, alpha, proxy RGB,
dust, exact forward/backward flow, occlusion) at 832x480, on one core and on all cores, and
how does the time grow with resolution? The anchor is the one-thread time at 832x480: the
printed ratios are the speed-up from threads and the cost relative to that resolution.
"""
import argparse
import json
import time

import derrumbe

SCENE = {
    "version": 1, "fps": 24, "duration": 2.0, "seed": 3, "intensity": 0.6,
    "buildings": [{"footprint": [16, 16], "floors": 10, "bays": [4, 4], "chunks_per_panel": 5}],
    "triggers": [{"type": "charge", "time": 0.2, "building": 0, "floors": [0, 1], "energy": 8e6}],
    "cameras": [{"name": "street", "keys": [{"time": 0, "position": [10, 2, 45], "target": [0, 14, 0]}]}],
    "limits": {"max_pieces": 100000},
}


def fps(track, frames, width, height, threads):
    start = time.perf_counter()
    track.render(0, 20, 20 + frames, width=width, height=height, threads=threads)
    return frames / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    track = derrumbe.Scene.from_json(json.dumps(SCENE)).simulate(progress=False)
    triangles = sum(len(track.piece_mesh(p)[1]) for p in range(track.num_pieces))
    base = fps(track, args.frames, 832, 480, 1)
    rows = []
    for width, height in [(416, 240), (832, 480), (1280, 720), (1920, 1080)]:
        one = fps(track, args.frames, width, height, 1)
        both = fps(track, args.frames, width, height, 0)
        rows.append({"width": width, "height": height, "fps_1_thread": one, "fps_all_threads": both,
                     "thread_speedup": both / one, "time_vs_832x480_1_thread": base / one})
    print(json.dumps({"pieces": track.num_pieces, "triangles": triangles, "rows": rows}, indent=2))
    print(f"\n{track.num_pieces} pieces, {triangles} triangles, all AOVs")
    print(f"{'resolution':>12}{'fps 1 thr':>11}{'fps all':>10}{'speed-up':>10}{'cost vs 832x480':>17}")
    for r in rows:
        print(f"{r['width']:>6}x{r['height']:<5}{r['fps_1_thread']:>11.1f}{r['fps_all_threads']:>10.1f}"
              f"{r['thread_speedup']:>10.2f}{r['time_vs_832x480_1_thread']:>17.2f}")


if __name__ == "__main__":
    main()
