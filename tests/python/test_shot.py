"""The shot end to end on the default model: what it writes (checked by ffprobe and the OpenEXR
library), the stage cache (inspected on disk), resume after kill -9, the sidecar, the command
line's exit codes and bad input."""
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys

import pytest
import torch

import derrumbe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENE = os.path.join(ROOT, "examples", "scenes", "small.json")
SMALL = ["--frames", "5", "--width", "64", "--height", "48", "--steps", "3"]
STAGES = ["simulate", "render", "text", "conditioning", "noise", "sample", "decode"]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "derrumbe", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def file_hash(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def exr_hashes(folder):
    return {name: file_hash(os.path.join(folder, name)) for name in sorted(os.listdir(folder)) if name.endswith(".exr")}


def cache_entries(cache):
    """The entries of each stage folder of a cache (finished ones: no temporaries)."""
    return {stage: sorted(e for e in os.listdir(os.path.join(cache, stage)) if not e.startswith("."))
            if os.path.isdir(os.path.join(cache, stage)) else [] for stage in STAGES}


@pytest.fixture(scope="module")
def shot_dir(tmp_path_factory):
    """One shot written by the command line, shared by the output checks."""
    out = tmp_path_factory.mktemp("shot")
    result = cli("generate", SCENE, "--out", out, *SMALL, "--png")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_mp4_opens_in_ffprobe_with_the_shot_size_rate_and_tags(shot_dir):
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json",
                            str(shot_dir / "shot.mp4")], capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p"
    assert (stream["width"], stream["height"]) == (64, 48)
    assert int(stream["nb_read_frames"]) == 5 and stream["r_frame_rate"] == "24/1"
    assert stream["color_primaries"] == "bt709" and stream["color_space"] == "bt709"
    assert stream["color_transfer"] == "iec61966-2-1"


def cryptomatte_float(name):
    """Cryptomatte 1.1: MurmurHash3_32 of the name as float32 bits, exponent kept in [1, 254]."""
    import mmh3

    bits = mmh3.hash(name, signed=False)
    exponent = (bits >> 23) & 255
    if exponent == 0 or exponent == 255:
        bits ^= 1 << 23
    return struct.unpack("<f", struct.pack("<I", bits))[0], bits


def test_exr_sequence_has_the_compositing_channels_cryptomatte_and_cameras(shot_dir):
    OpenEXR = pytest.importorskip("OpenEXR")
    names = sorted(n for n in os.listdir(shot_dir) if n.endswith(".exr"))
    assert names == [f"shot.{f}.exr" for f in range(1001, 1006)]
    with OpenEXR.File(str(shot_dir / "shot.1003.exr"), separate_channels=True) as f:
        header, channels = f.header(), f.channels()
        for c in "RGBA":
            assert channels[c].pixels.dtype.name == "float16"
        for c in ["depth.Z", "forward.u", "forward.v", "backward.u", "backward.v", "N.x", "N.y", "N.z",
                  "CryptoObject00.R", "CryptoObject00.G", "CryptoObject01.R"]:
            assert channels[c].pixels.dtype.name == "float32", c
        assert channels["R"].pixels.shape == (48, 64)
        assert "chromaticities" in header and "worldToCamera" in header and "worldToNDC" in header
        keys = [k for k in header if k.startswith("cryptomatte/") and k.endswith("/manifest")]
        assert len(keys) == 1
        prefix = keys[0][: -len("manifest")]
        assert header[prefix + "name"] == "CryptoObject" and header[prefix + "hash"] == "MurmurHash3_32"
        manifest = json.loads(header[keys[0]])
        assert manifest, "the manifest lists the pieces"
        for name, hex_id in manifest.items():
            assert hex_id == f"{cryptomatte_float(name)[1]:08x}"
        ids = channels["CryptoObject00.R"].pixels
        known = {cryptomatte_float(n)[0] for n in manifest}
        seen = {float(v) for v in ids[ids != 0]}
        assert seen and seen <= known, "every id in the image is a manifest entry"


def test_png_sequence_is_written_from_the_first_frame_number(shot_dir):
    assert sorted(n for n in os.listdir(shot_dir) if n.endswith(".png")) == [f"shot.{f}.png" for f in range(1001, 1006)]


def test_sidecar_reruns_the_shot_exactly(shot_dir, tmp_path):
    sidecar = json.load(open(shot_dir / "shot.json"))
    assert sidecar["derrumbe_version"] == derrumbe.__version__
    assert any(name.startswith("transformer/") for name in sidecar["model"]["files"])
    assert sidecar["params"]["frames"] == 5 and sidecar["frames"] == {"first": 1001, "last": 1005}
    rerun = cli("generate", "--sidecar", shot_dir / "shot.json", "--out", tmp_path / "again")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert exr_hashes(tmp_path / "again") == exr_hashes(shot_dir)  # recomputed from scratch (own cache)
    assert cache_entries(tmp_path / "again" / ".derrumbe-cache")["simulate"]


def run_shot(cache, out, **settings):
    params = dict(frames=5, width=64, height=48, steps=3, cache_dir=str(cache),
                  output={"dir": str(out), "mp4": False, "exr": False}, progress=False)
    params.update(settings)
    return derrumbe.Shot(SCENE, **params).render()


def test_time_left_covers_the_whole_shot_from_the_second_run_on(tmp_path):
    cache = tmp_path / "cache"

    def render(out, seed):
        seen = {}
        params = dict(frames=5, width=64, height=48, steps=3, cache_dir=str(cache), seed=seed,
                      output={"dir": str(out), "mp4": False, "exr": False}, progress=False)
        derrumbe.Shot(SCENE, **params).render(lambda info: seen.setdefault(info["stage"], info) and False)
        return {stage: info["remaining"] for stage, info in seen.items()}  # as each stage began

    first = render(tmp_path / "a", seed=1)
    assert first["decode"] == -1  # no run has timed decoding or writing yet
    timings = json.loads((cache / "timings.json").read_text())
    assert set(timings) == set(STAGES) | {"write"} and all(rate > 0 for rate in timings.values())

    second = render(tmp_path / "b", seed=2)  # new seed: noise, sample, decode and write run again
    decode_alone = timings["decode"] * 5 * 64 * 48
    assert second["noise"] > second["decode"] >= second["write"] > 0
    assert second["noise"] >= decode_alone * 0.999  # the stages after the running one are counted

    (cache / "timings.json").write_text('{"decode": ')  # a damaged history is no error, and is rewritten
    assert render(tmp_path / "c", seed=3)["write"] == -1  # what it held is forgotten
    assert set(json.loads((cache / "timings.json").read_text())) >= {"noise", "sample", "decode", "write"}


def reused(result):
    return {s.name: s.reused for s in result.stages if s.name in STAGES}


def test_the_cache_reruns_only_what_a_change_touches(tmp_path):
    cache = tmp_path / "cache"
    first = run_shot(cache, tmp_path / "a")
    assert first.frames.shape == (5, 3, 48, 64) and first.frames.dtype == torch.float32
    assert not any(reused(first).values())
    assert all(len(v) == 1 for v in cache_entries(cache).values())

    camera = [{"time": 0.0, "position": [3.0, 4.0, 28.0], "target": [0.0, 6.0, 0.0]}]
    run_shot(cache, tmp_path / "b", camera=camera)
    entries = cache_entries(cache)  # a camera change reuses the simulation and the text
    assert len(entries["simulate"]) == 1 and len(entries["text"]) == 1
    assert all(len(entries[s]) == 2 for s in ["render", "conditioning", "noise", "sample", "decode"])

    seed = run_shot(cache, tmp_path / "c", seed=7)
    entries = cache_entries(cache)  # a seed reuses the AOVs, the text and the seed-independent conditioning
    assert [len(entries[s]) for s in STAGES] == [1, 2, 1, 2, 3, 3, 3]
    assert reused(seed) == {"simulate": True, "render": True, "text": True, "conditioning": True, "noise": False,
                            "sample": False, "decode": False}
    assert not torch.equal(seed.frames, first.frames)

    run_shot(cache, tmp_path / "d", sampler="euler")
    entries = cache_entries(cache)  # a sampler reuses everything up to the noise
    assert [len(entries[s]) for s in STAGES] == [1, 2, 1, 2, 3, 4, 4]

    run_shot(cache, tmp_path / "e", prompt="a brick tower falls apart at dusk")
    entries = cache_entries(cache)  # a prompt reuses all but the text and what follows
    assert [len(entries[s]) for s in STAGES] == [1, 2, 2, 2, 3, 5, 5]

    run_shot(cache, tmp_path / "f", intensity=0.9)
    assert len(cache_entries(cache)["simulate"]) == 2  # an intensity re-simulates

    again = run_shot(cache, tmp_path / "g")
    assert all(reused(again).values()) and torch.equal(again.frames, first.frames)


def kill_when(args, marker, timeout=600):
    """Starts the command line, kills it with SIGKILL when a progress line starts with `marker`."""
    proc = subprocess.Popen([sys.executable, "-m", "derrumbe", *map(str, args)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stderr:
            if line.startswith(marker):
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode


@pytest.mark.parametrize("marker", ["[3/9 render]", "[7/9 sample] step 3/", "[9/9 write]"])
def test_a_killed_shot_resumes_to_bit_identical_frames(tmp_path, marker):
    args = ["generate", SCENE, "--frames", "5", "--width", "64", "--height", "48", "--steps", "6", "--no-mp4"]
    reference = cli(*args, "--out", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]

    out = tmp_path / "killed"
    assert kill_when([*args, "--out", out], marker) == -signal.SIGKILL
    assert not (out / "shot.json").exists(), "no sidecar: the shot does not look finished"
    if "sample" in marker:  # the state saved after step 2 is there, and the rerun starts from it
        assert [e for e in os.listdir(out / ".derrumbe-cache" / "sample") if e.endswith(".state")]
    resumed = cli(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert exr_hashes(out) == exr_hashes(tmp_path / "reference")
    assert not [e for e in os.listdir(out / ".derrumbe-cache" / "sample") if e.endswith(".state")]


def test_ctrl_c_cancels_with_exit_code_130(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "derrumbe", "generate", SCENE, "--frames", "5", "--width", "64",
                             "--height", "48", "--steps", "8", "--out", str(tmp_path)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if line.startswith("[7/9 sample] step 1/"):
            os.kill(proc.pid, signal.SIGINT)
            break
    assert proc.wait(timeout=600) == 130
    assert not (tmp_path / "shot.json").exists()


def test_cancelling_from_the_python_callback_raises_cancelled(tmp_path):
    shot = derrumbe.Shot(SCENE, frames=5, width=64, height=48, steps=3, output={"dir": str(tmp_path)}, progress=False)
    with pytest.raises(derrumbe.Cancelled):
        shot.render(callback=lambda info: info["stage"] == "sample")
    assert not (tmp_path / "shot.json").exists()


def bad_scene(tmp_path):
    scene = json.load(open(SCENE))
    scene["buildings"][0]["floors"] = -3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(scene))
    return path


def test_bad_input_gives_clear_errors_and_documented_exit_codes(tmp_path):
    cases = [
        (["generate", bad_scene(tmp_path), *SMALL], 2, "floors"),
        (["generate", SCENE, *SMALL, "--model", tmp_path / "nowhere"], 4, "nowhere"),
        (["generate", SCENE, *SMALL, "--model", tmp_path], 4, "model_index.json"),
        (["generate", SCENE, "--frames", "6", "--width", "64", "--height", "48"], 2, "1 + 4k"),
        (["generate", SCENE, "--frames", "5", "--width", "60", "--height", "48", "--steps", "3"], 2, "multiple"),
        (["generate", SCENE, *SMALL, "--sampler", "nonsense"], 2, "nonsense"),
        (["generate", tmp_path / "missing.json", *SMALL], 2, "missing.json"),
        (["generate", SCENE, "--camera", "crane", *SMALL], 2, "crane"),
        (["generate", "--steps", "x", SCENE], 2, "steps"),
        (["no-such-command"], 2, ""),
    ]
    for args, code, words in cases:
        result = cli(*args, "--out", tmp_path / "out") if args[0] == "generate" else cli(*args)
        assert result.returncode == code, (args, result.returncode, result.stderr[-2000:])
        assert words in result.stderr, (args, result.stderr[-2000:])
    assert not (tmp_path / "out" / "shot.json").exists()


def test_an_unwritable_output_folder_is_an_io_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("generate", SCENE, *SMALL, "--out", blocker / "shot")
    assert result.returncode == 3, result.stderr[-2000:]
    assert "cannot create" in result.stderr


def test_a_truncated_plate_video_is_refused_and_nothing_looks_finished(shot_dir, tmp_path):
    plate = tmp_path / "plate.mp4"
    data = open(shot_dir / "shot.mp4", "rb").read()
    plate.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "out"
    result = cli("generate", SCENE, *SMALL, "--plate", plate, "--out", out)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "plate.mp4" in result.stderr
    assert not (out / "shot.json").exists() and not (out / "shot.mp4").exists()


def test_a_plate_sequence_is_composited(shot_dir, tmp_path):
    shutil.copytree(shot_dir, tmp_path / "plate", ignore=shutil.ignore_patterns(".derrumbe-cache"))
    out = tmp_path / "out"
    result = cli("generate", SCENE, *SMALL, "--plate", tmp_path / "plate" / "shot.%04d.png", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    with_plate = json.load(open(out / "shot.json"))["stages"]["conditioning"]
    assert with_plate != json.load(open(shot_dir / "shot.json"))["stages"]["conditioning"]


def test_preview_and_variations(tmp_path):
    shot = derrumbe.Shot(SCENE, frames=5, width=64, height=48, steps=4, progress=False,
                         output={"dir": str(tmp_path), "exr": False})
    preview = shot.preview()
    assert preview.frames.shape == (5, 3, 16, 32) and preview.output_dir == str(tmp_path / "preview")
    results = shot.variations(seeds=[1, 2])
    assert [os.path.basename(r.output_dir) for r in results] == ["v0_seed1", "v1_seed2"]
    assert all(os.path.exists(os.path.join(r.output_dir, "shot.mp4")) for r in results)
    assert not torch.equal(results[0].frames, results[1].frames)
    assert results[1].stage("render").reused and not results[1].stage("noise").reused


def test_shot_params_round_trip_and_reject_unknown_keys(tmp_path):
    shot = derrumbe.Shot(SCENE, camera="main", frames=9, seed=3, guide={"repaint": 1, "mask": ["ids"],
                                                                       "mask_ids": [0, 2]}, progress=False)
    params = shot.params
    assert params["camera"]["name"] == "main" and params["guide"]["mask_ids"] == [0, 2]
    assert derrumbe.Shot(**{k: v for k, v in params.items() if k != "version"}).params == params
    with pytest.raises(ValueError, match="frobnicate"):
        derrumbe.Shot(SCENE, frobnicate=1)
    with pytest.raises(ValueError, match="guide.sdedit_strength"):
        derrumbe.Shot(SCENE, guide={"sdedit_strength": 2.0})
    with pytest.raises(ValueError, match="ids"):
        derrumbe.Shot(SCENE, guide={"mask": ["ids"]})


def test_the_command_is_on_path_and_reports_the_default_model():
    exe = shutil.which("derrumbe")
    assert exe is not None, "pip install puts `derrumbe` on PATH"
    result = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "default model: " + derrumbe.default_model_path() in result.stdout
    assert subprocess.run([exe, "generate", "--help"], capture_output=True, text=True).returncode == 0
    samplers = subprocess.run([exe, "samplers"], capture_output=True, text=True).stdout.split()
    assert "uni_pc_bh2" in samplers and "euler" in samplers


def test_a_shot_can_start_later_in_the_simulation(tmp_path):
    """start = 12 (after the charge at frame 6): the shot's first frame is simulation frame 12, its
    passes and camera matrices those of frame 1013 of a shot from frame 0 (frames are numbered
    from first_frame still)."""
    OpenEXR = pytest.importorskip("OpenEXR")
    common = dict(width=64, height=48, steps=1, output={"mp4": False}, progress=False)
    derrumbe.Shot(SCENE, frames=17, **dict(common, output={"dir": str(tmp_path / "a"), "mp4": False})).render()
    derrumbe.Shot(SCENE, frames=5, start=12, **dict(common, output={"dir": str(tmp_path / "b"), "mp4": False})).render()
    with OpenEXR.File(str(tmp_path / "a" / "shot.1013.exr"), separate_channels=True) as a, \
            OpenEXR.File(str(tmp_path / "b" / "shot.1001.exr"), separate_channels=True) as b:
        for c in ["depth.Z", "backward.u", "A"]:
            assert (a.channels()[c].pixels == b.channels()[c].pixels).all(), c
        assert str(a.header()["worldToCamera"]) == str(b.header()["worldToCamera"])
        b_depth = b.channels()["depth.Z"].pixels.copy()
    with OpenEXR.File(str(tmp_path / "a" / "shot.1001.exr"), separate_channels=True) as first:
        assert (first.channels()["depth.Z"].pixels != b_depth).any()  # frame 0 is another picture
    with pytest.raises(ValueError, match=r"the shot needs 1005 \(start 1000 \+ frames 5"):
        derrumbe.Shot(SCENE, frames=5, start=1000, **dict(common, output={"dir": str(tmp_path / "c")})).render()
