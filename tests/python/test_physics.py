"""Physics from Python: scenes, simulation, SimTrack arrays, and .glb files that independent
glTF readers (pygltflib, trimesh) open."""
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pygltflib
import pytest
import torch
import trimesh

import derrumbe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenes"


@pytest.fixture(scope="module")
def small_track():
    return derrumbe.Scene.load(str(EXAMPLES / "small.json")).simulate(progress=False)


def test_scene_errors_name_the_json_path():
    with pytest.raises(ValueError, match=r"buildings\[0\]\.floors: must be a positive integer, got -3"):
        derrumbe.Scene.from_json(json.dumps({"version": 1, "buildings": [{"floors": -3}]}))
    with pytest.raises(ValueError, match="malformed JSON"):
        derrumbe.Scene.from_json('{"version": 1, "buildings": [')
    with pytest.raises(FileNotFoundError):
        derrumbe.Scene.load("/nonexistent/scene.json")
    text = (EXAMPLES / "collapse.json").read_text()
    scene = derrumbe.Scene.from_json(text)
    assert derrumbe.Scene.from_json(scene.to_json()).to_json() == scene.to_json()


def test_simulation_is_deterministic_and_cancellable(small_track):
    scene = derrumbe.Scene.load(str(EXAMPLES / "small.json"))
    again = scene.simulate(progress=False)
    assert torch.equal(again.poses, small_track.poses)
    assert torch.equal(again.breaks["position"], small_track.breaks["position"])
    with pytest.raises(derrumbe.Cancelled, match="cancelled at frame 5"):
        scene.simulate(progress=False, callback=lambda frame, n: frame == 5)


def test_track_arrays(small_track):
    t = small_track
    assert t.poses.shape == (t.num_frames, t.num_pieces, 7) and t.poses.dtype == torch.float32
    assert torch.isfinite(t.poses).all()
    m = t.transforms()
    assert m.shape == (t.num_frames, t.num_pieces, 4, 4)
    torch.testing.assert_close(m[..., :3, 3], t.poses[..., 4:])
    # Rotation blocks are orthonormal.
    r = m[..., :3, :3]
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3).expand_as(r), atol=1e-5, rtol=0)
    b = t.breaks
    assert len(b["frame"]) > 0 and b["pieces"].shape == (len(b["frame"]), 2)
    assert (b["frame"] >= 0).all() and (b["frame"] < t.num_frames).all()
    assert t.dust(t.num_frames - 1).shape[1] == 5
    vertices, triangles = t.piece_mesh(0)
    assert vertices.shape[1] == 3 and triangles.shape[1] == 3 and int(triangles.max()) < len(vertices)
    assert {p["kind"] for p in t.pieces} >= {"column", "slab", "wall"}
    with pytest.raises(ValueError, match="outside"):
        t.piece_mesh(t.num_pieces)
    with pytest.raises(ValueError, match="outside"):
        t.dust(-1)


def test_higher_intensity_breaks_more():
    broken = []
    for intensity in [0.1, 0.9]:
        scene = derrumbe.Scene.load(str(EXAMPLES / "small.json"))
        scene.intensity = intensity
        broken.append(len(scene.simulate(progress=False).breaks["frame"]))
    assert broken[0] < broken[1]


def world_vertices(track, frame):
    out = []
    m = track.transforms()[frame]
    for p in range(track.num_pieces):
        v, _ = track.piece_mesh(p)
        out.append(v @ m[p, :3, :3].T + m[p, :3, 3])
    return out


def test_glb_opens_in_independent_readers(small_track, tmp_path):
    path = tmp_path / "collapse.glb"
    small_track.to_gltf(str(path))
    gltf = pygltflib.GLTF2().load(str(path))
    assert gltf.asset.version == "2.0"
    mesh_nodes = [n for n in gltf.nodes if n.mesh is not None]
    assert len(mesh_nodes) == small_track.num_pieces
    assert len(gltf.animations) == 1
    channels = gltf.animations[0].channels
    assert {c.target.path for c in channels} >= {"translation", "rotation"}
    times = gltf.accessors[gltf.animations[0].samplers[0].input]
    assert times.count == small_track.num_frames
    assert times.max[0] == pytest.approx((small_track.num_frames - 1) / small_track.fps, rel=1e-6)
    # trimesh places every piece at its frame-0 pose: the same world geometry as derrumbe's.
    scene = trimesh.load(str(path))
    assert len(scene.geometry) == small_track.num_pieces
    ours = torch.cat(world_vertices(small_track, 0))
    theirs = torch.tensor(scene.to_geometry().vertices, dtype=torch.float32)
    lo, hi = ours.min(0).values, ours.max(0).values
    torch.testing.assert_close(theirs.min(0).values, lo, atol=1e-3, rtol=0)
    torch.testing.assert_close(theirs.max(0).values, hi, atol=1e-3, rtol=0)


def test_glb_and_cache_round_trips(small_track, tmp_path):
    small_track.to_gltf(str(tmp_path / "t.glb"))
    back = derrumbe.SimTrack.from_gltf(str(tmp_path / "t.glb"), fps=small_track.fps)
    assert back.num_frames == small_track.num_frames and back.num_pieces == small_track.num_pieces
    for f in [0, small_track.num_frames // 2, small_track.num_frames - 1]:
        for a, b in zip(world_vertices(back, f), world_vertices(small_track, f)):
            torch.testing.assert_close(a, b, atol=2e-4, rtol=0)
    small_track.save(str(tmp_path / "t.drbtrack"))
    cached = derrumbe.SimTrack.load(str(tmp_path / "t.drbtrack"))
    assert torch.equal(cached.poses, small_track.poses)
    assert torch.equal(cached.dust(20), small_track.dust(20))
    data = (tmp_path / "t.drbtrack").read_bytes()
    (tmp_path / "bad.drbtrack").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        derrumbe.SimTrack.load(str(tmp_path / "bad.drbtrack"))
    (tmp_path / "bad.glb").write_bytes(b"glTF" + struct.pack("<II", 2, 1000) + b"\x00" * 12)  # claims 1000 bytes
    with pytest.raises(ValueError, match="truncated|bad.glb"):
        derrumbe.SimTrack.from_gltf(str(tmp_path / "bad.glb"))


@pytest.mark.skipif(shutil.which("blender") is None, reason="Blender is not installed (.ci/setup installs it)")
def test_glb_imports_in_blender(small_track, tmp_path):
    """Blender's own glTF importer reads the export: every piece as an animated mesh."""
    path = tmp_path / "collapse.glb"
    small_track.to_gltf(str(path))
    script = Path(__file__).parent / "blender" / "import_glb.py"
    # Blender embeds the system Python; a PATH that leads to another Python (pyenv's) makes it
    # pick up the wrong prefix, so it runs with the system PATH.
    env = dict(os.environ, PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    out = subprocess.run([shutil.which("blender"), "-b", "--python", str(script), "--", str(path)],
                         capture_output=True, text=True, timeout=300, env=env)
    lines = [l for l in out.stdout.splitlines() if l.startswith("DERRUMBE_BLENDER ")]
    assert lines, out.stdout[-2000:] + out.stderr[-2000:]
    found = json.loads(lines[0].split(" ", 1)[1])
    assert found["meshes"] == small_track.num_pieces
    assert found["animated"] == small_track.num_pieces
    assert found["cameras"] == 1
    assert found["last_frame"] == small_track.num_frames - 1
    # The collapse moves pieces by metres in Blender as in derrumbe.
    moved = (small_track.poses[-1, :, 4:] - small_track.poses[0, :, 4:]).norm(dim=1).max().item()
    assert found["max_moved"] == pytest.approx(moved, rel=1e-3)
