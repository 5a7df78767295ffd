"""Draws the clips the default model trains on (issue 11): scenes, looks and captions.

Each clip is deterministic from its seed: a building (footprint, floors, bays, windows,
material), the event that brings it down (a charge, an impact, removed supports or ground
shaking, with its time and intensity), the dust, a camera (position, lens and move), and the
look that only the path tracer sees (sun direction and time of day). The caption is written
from those parameters, so that the words a prompt uses are the ones the pictures were made
with. Training and held-out clips come from disjoint seed ranges, so the held-out buildings and
cameras are never trained on.

    python training/scenes.py --out data/clips --train 320 --heldout 16

writes data/clips/<split>/<seed>.json (existing files are kept: a rerun resumes).
"""
import argparse
import json
import math
import os
import random
from typing import Any, Dict

FPS = 24
CLIP_FRAMES = 33  # Wan's 4n + 1
WIDTH, HEIGHT = 160, 96  # the default model's resolution
SENSOR_MM = (36.0, 36.0 * HEIGHT / WIDTH)  # a film back with the frame's aspect: no crop either side
LEAD_FRAMES = 4  # frames of the clip before the event: each clip is a window with motion in it
SPLIT_SEEDS = {"train": 0, "heldout": 1_000_000}  # first seed of each split; the ranges never meet

# Looks: the scene material (the simulator's proxy shading) and the words a caption uses.
MATERIALS = {
    "concrete": dict(density=2400.0, bond_strength=3.0e5, words="concrete"),
    "brick": dict(density=1900.0, bond_strength=2.0e5, words="red brick"),
    "glass": dict(density=2500.0, bond_strength=1.5e5, words="glass and steel"),
    "steel": dict(density=7800.0, bond_strength=6.0e5, words="steel-framed"),
}
TIMES_OF_DAY = {  # sun elevation range in degrees, sky strength
    "morning": dict(elevation=(12.0, 25.0), sky=0.8),
    "noon": dict(elevation=(55.0, 75.0), sky=1.0),
    "golden hour": dict(elevation=(3.0, 10.0), sky=0.6),
    "overcast": dict(elevation=(30.0, 60.0), sky=0.4),
}
MOVES = ["static", "dolly in", "orbit", "pan"]
EVENTS = {"charge": "a demolition charge", "impact": "a wrecking impact", "remove_supports": "failing supports",
          "shake": "an earthquake"}


def draw_clip(seed: int) -> Dict[str, Any]:
    """The clip of `seed`: {"seed", "scene" (a derrumbe scene), "look", "window", "caption"}."""
    rng = random.Random(seed)
    material = rng.choice(sorted(MATERIALS))
    building = draw_building(rng, material)
    height = building["floors"] * building["floor_height"]
    event_time = round(rng.uniform(0.2, 0.5), 3)
    trigger = draw_trigger(rng, building, event_time)
    dust = rng.random() < 0.8
    window_start = max(0, round(event_time * FPS) - LEAD_FRAMES)
    scene = {
        "version": 1,
        "fps": FPS,
        "duration": round((window_start + CLIP_FRAMES + 1) / FPS, 4),
        "seed": seed,
        "intensity": round(rng.uniform(0.3, 0.9), 3),
        "materials": [dict(name=material, look=material, density=MATERIALS[material]["density"],
                           bond_strength=MATERIALS[material]["bond_strength"])],
        "buildings": [building],
        "triggers": [trigger],
        "dust": {"enabled": dust, "particles_per_break": rng.randint(2, 6), "max_particles": 20000},
        "cameras": [draw_camera(rng, building, height, window_start)],
    }
    time_of_day = rng.choice(sorted(TIMES_OF_DAY))
    lo, hi = TIMES_OF_DAY[time_of_day]["elevation"]
    look = {"time_of_day": time_of_day, "sun_elevation_deg": round(rng.uniform(lo, hi), 2),
            "sun_azimuth_deg": round(rng.uniform(0.0, 360.0), 2), "sky_strength": TIMES_OF_DAY[time_of_day]["sky"],
            "camera_move": scene["cameras"][0]["name"]}
    clip = {"seed": seed, "scene": scene, "look": look,
            "window": {"first_frame": window_start, "frames": CLIP_FRAMES}}
    clip["caption"] = caption(clip)
    return clip


def draw_building(rng: random.Random, material: str) -> Dict[str, Any]:
    floors = rng.randint(2, 6)
    floor_height = round(rng.uniform(2.8, 3.6), 2)
    bays = [rng.randint(2, 3), rng.randint(2, 3)]
    footprint = [round(b * rng.uniform(2.8, 4.0), 2) for b in bays]
    return {
        "name": "building",
        "position": [0.0, 0.0],
        "rotation_deg": round(rng.uniform(-30.0, 30.0), 1),
        "footprint": footprint,
        "floors": floors,
        "floor_height": floor_height,
        "bays": bays,
        "column_size": 0.4,
        "windows": {"enabled": material != "steel" or rng.random() < 0.5, "width": 1.0, "height": 1.2, "sill": 0.9},
        "chunks_per_panel": rng.randint(1, 2),
        "material": material,
    }


def draw_trigger(rng: random.Random, building: Dict[str, Any], time: float) -> Dict[str, Any]:
    kind = rng.choice(sorted(EVENTS))
    low_floors = list(range(min(2, building["floors"])))
    if kind == "charge":
        return {"type": "charge", "time": time, "building": 0, "floors": low_floors,
                "energy": round(rng.uniform(2.0e6, 6.0e6), -4)}
    if kind == "remove_supports":
        columns = (building["bays"][0] + 1) * (building["bays"][1] + 1)
        removed = sorted(rng.sample(range(columns), k=max(2, columns // 2)))
        return {"type": "remove_supports", "time": time, "building": 0, "floors": low_floors, "columns": removed}
    if kind == "impact":
        side = rng.uniform(0.0, 2.0 * math.pi)
        start = [12.0 * math.cos(side), rng.uniform(2.0, 5.0), 12.0 * math.sin(side)]
        speed = rng.uniform(25.0, 40.0)
        return {"type": "impact", "time": time, "mass": round(rng.uniform(2000.0, 6000.0)), "radius": 0.8,
                "position": [round(v, 3) for v in start],
                "velocity": [round(-speed * math.cos(side), 3), 0.0, round(-speed * math.sin(side), 3)]}
    return {"type": "shake", "time": time, "amplitude": round(rng.uniform(0.15, 0.35), 3),
            "frequency": round(rng.uniform(1.5, 3.0), 2), "duration": 2.0}


def draw_camera(rng: random.Random, building: Dict[str, Any], height: float, window_start: int) -> Dict[str, Any]:
    """A camera framing the whole building, with one of MOVES over the clip's window: a key on
    every frame, so that every renderer (derrumbe's proxy, Cycles through the .glb) sees the same
    camera whatever its own interpolation."""
    focal = rng.choice([24.0, 28.0, 35.0, 50.0])
    half_fov = math.atan(0.5 * SENSOR_MM[1] / focal)  # vertical
    extent = max(height, max(building["footprint"]))
    distance = extent * rng.uniform(0.75, 1.1) / math.tan(half_fov)
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    eye_height = rng.uniform(1.5, max(2.0, 0.8 * height))
    target = [0.0, round(0.4 * height, 3), 0.0]
    move = rng.choice(MOVES)

    # The move as (azimuth, distance, target x) at s in [0, 1] across the window.
    turn, shift = rng.choice([-1, 1]) * 0.35, rng.choice([-1, 1]) * 0.15 * extent
    path = {"static": lambda s: (azimuth, distance, 0.0),
            "dolly in": lambda s: (azimuth, distance * (1.0 - 0.15 * s), 0.0),
            "orbit": lambda s: (azimuth + turn * s, distance, 0.0),
            "pan": lambda s: (azimuth, distance, shift * (2.0 * s - 1.0))}[move]
    keys = []
    for i in range(CLIP_FRAMES):
        a, d, x = path(i / (CLIP_FRAMES - 1))
        position = [d * math.sin(a), eye_height, d * math.cos(a)]
        keys.append({"time": round((window_start + i) / FPS, 6), "position": [round(v, 4) for v in position],
                     "target": [round(x, 4), target[1], target[2]], "focal_length_mm": focal,
                     "sensor_width_mm": SENSOR_MM[0], "sensor_height_mm": SENSOR_MM[1]})
    return {"name": move, "keys": keys}


def caption(clip: Dict[str, Any]) -> str:
    """The words for the clip's parameters: material, floors, event, dust, time of day, move."""
    scene, look = clip["scene"], clip["look"]
    building = scene["buildings"][0]
    material = MATERIALS[building["material"]]["words"]
    event = EVENTS[scene["triggers"][0]["type"]]
    dust = "with a thick dust cloud" if scene["dust"]["enabled"] else "without dust"
    camera = {"static": "static camera", "dolly in": "camera dollies in", "orbit": "camera orbits",
              "pan": "camera pans"}[look["camera_move"]]
    return (f"a {building['floors']}-storey {material} building collapses after {event}, {dust}, "
            f"{look['time_of_day']}, {camera}")


def write_clips(out: str, split: str, count: int) -> int:
    """Writes `count` clips of `split` under out/split (kept if already there); returns how many were new."""
    folder = os.path.join(out, split)
    os.makedirs(folder, exist_ok=True)
    written = 0
    for seed in range(SPLIT_SEEDS[split], SPLIT_SEEDS[split] + count):
        path = os.path.join(folder, f"{seed}.json")
        if os.path.exists(path):
            continue
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(draw_clip(seed), f, indent=1)
        os.replace(tmp, path)  # a clip file that exists is complete
        written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--heldout", type=int, default=16)
    args = parser.parse_args()
    for split, count in [("train", args.train), ("heldout", args.heldout)]:
        print(f"{split}: {write_clips(args.out, split, count)} new clips in {os.path.join(args.out, split)}")


if __name__ == "__main__":
    main()
