"""Simulation time per simulated second, and how it grows with the number of pieces.

Question: how long does derrumbe take to fracture and simulate a 10-floor building collapse
(5 s at 24 fps, charges on the two lowest floors) at about 500, 1,000, 2,000 and 4,000
pieces? The building's footprint, bays and chunks per panel are chosen to reach each piece
count. The anchor is linear scaling from the smallest case: the printed ratio
(time / pieces) / (time_500 / pieces_500) is 1 for perfectly linear growth.
"""
import argparse
import json
import time

import derrumbe

# (bays per side, chunks per panel) giving roughly 500, 1000, 2000, 4000 pieces at 10 floors.
CASES = [(2, 2), (3, 2), (4, 5), (5, 9)]


def scene_json(bays, chunks, duration):
    width = 4.0 * bays
    return json.dumps({
        "version": 1, "fps": 24, "duration": duration, "seed": 3, "intensity": 0.6,
        "buildings": [{"footprint": [width, width], "floors": 10, "floor_height": 3.2, "bays": [bays, bays],
                       "chunks_per_panel": chunks}],
        "triggers": [{"type": "charge", "time": 0.3, "building": 0, "floors": [0, 1], "energy": 8e6}],
        "limits": {"max_pieces": 100000},
    })


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="the two smallest cases only")
    args = parser.parse_args()
    results = []
    for bays, chunks in CASES[:2] if args.quick else CASES:
        scene = derrumbe.Scene.from_json(scene_json(bays, chunks, args.duration))
        start = time.perf_counter()
        track = scene.simulate(progress=False)
        seconds = time.perf_counter() - start
        results.append({"pieces": track.num_pieces, "frames": track.num_frames, "breaks": len(track.breaks["frame"]),
                        "seconds": seconds, "seconds_per_simulated_second": seconds / args.duration})
    base = results[0]["seconds"] / results[0]["pieces"]
    for r in results:
        r["ratio_to_linear_from_smallest"] = (r["seconds"] / r["pieces"]) / base
    print(json.dumps({"duration_s": args.duration, "fps": 24, "floors": 10, "cases": results}, indent=2))
    print(f"\n{'pieces':>8}{'breaks':>8}{'wall s':>9}{'s per sim s':>13}{'vs linear':>11}")
    for r in results:
        print(f"{r['pieces']:>8}{r['breaks']:>8}{r['seconds']:>9.2f}{r['seconds_per_simulated_second']:>13.2f}"
              f"{r['ratio_to_linear_from_smallest']:>11.2f}")


if __name__ == "__main__":
    main()
