"""derrumbe.io files checked by independent readers: ffprobe and ffmpeg for the MP4, Pillow for
PNGs, the OpenEXR package for EXR frames (channels, pixel types, attributes, Cryptomatte), and
mmh3 for MurmurHash3 and the Cryptomatte ids. Skipped while the io bindings are not built."""
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import derrumbe

io = getattr(derrumbe, "io", None) or getattr(getattr(derrumbe, "_derrumbe", None), "io", None)
if io is None:
    pytest.skip("derrumbe.io bindings are not built", allow_module_level=True)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenes"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None,
                                  reason="ffprobe/ffmpeg not installed")


def gradient(width, height, frame=0):
    x = (np.arange(width, dtype=np.float64)[None, :] + 2.0 * frame) / width
    y = np.arange(height, dtype=np.float64)[:, None] / height
    rgb = [0.1 + 0.8 * np.mod(x + 0.3 * c, 1.0) * (0.5 + 0.5 * y) for c in range(3)]
    return np.stack(rgb, axis=-1).astype(np.float32)


def colour_bars(width=96, height=32, bar=16):
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]], np.float32)
    row = colours[np.arange(width) // bar] * 0.8 + 0.1
    return np.broadcast_to(row, (height, width, 3)).copy()


def bar_interiors(width=96, height=32, bar=16):
    """Pixels away from the bars' edges, where 4:2:0 chroma subsampling does not blur."""
    x = np.arange(width) % bar
    cols = (x >= 3) & (x <= bar - 4)
    return np.s_[4:height - 4, cols]


def cryptomatte_float(name):
    """The Cryptomatte 1.1 uint32_to_float32 conversion, per the specification."""
    mmh3 = pytest.importorskip("mmh3")
    h = mmh3.hash(name, signed=False)
    exponent = min(max((h >> 23) & 0xFF, 1), 254)
    bits = (h & 0x807FFFFF) | (exponent << 23)
    return struct.unpack("<f", struct.pack("<I", bits))[0], bits


def ffprobe(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
         "stream=codec_name,pix_fmt,width,height,nb_frames,nb_read_frames,r_frame_rate,avg_frame_rate,"
         "color_primaries,color_space,color_transfer,color_range", "-of", "json", str(path)],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["streams"][0]


def ffmpeg_decode(path, width, height):
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3).astype(np.float32) / 255.0


# ---- MP4 ---------------------------------------------------------------------------------------

@needs_ffmpeg
@pytest.mark.parametrize("fps, rate", [(25.0, "25/1"), (24000 / 1001, "24000/1001")])
def test_mp4_as_ffprobe_sees_it(tmp_path, fps, rate):
    path = tmp_path / "review.mp4"
    io.write_mp4([gradient(64, 48, f) for f in range(10)], str(path), fps=fps, crf=18)
    s = ffprobe(path)
    assert s["codec_name"] == "h264" and s["pix_fmt"] == "yuv420p"
    assert (s["width"], s["height"]) == (64, 48)
    assert s["nb_frames"] == "10" and s["nb_read_frames"] == "10"
    assert s["r_frame_rate"] == rate and s["avg_frame_rate"] == rate
    assert s["color_primaries"] == "bt709" and s["color_space"] == "bt709"
    assert s["color_transfer"] == "iec61966-2-1" and s["color_range"] == "tv"
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart: the index comes first
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name]


@needs_ffmpeg
def test_mp4_colours_through_ffmpeg_and_read_video(tmp_path):
    """Saturated bars: a BT.601/709 mix-up between encoder tags and matrix shows up here."""
    bars = colour_bars()
    path = tmp_path / "bars.mp4"
    io.write_mp4([bars, bars], str(path), crf=10)
    inner = bar_interiors()
    by_ffmpeg = ffmpeg_decode(path, 96, 32)
    assert by_ffmpeg.shape == (2, 32, 96, 3)
    assert np.abs(by_ffmpeg[1][inner] - bars[inner]).max() < 0.04
    ours = io.read_video(str(path))
    assert len(ours) == 2 and ours[1].dtype == np.float32
    assert np.abs(ours[1][inner] - bars[inner]).max() < 0.04
    assert np.abs(ours[1] - by_ffmpeg[1]).mean() < 0.01


def test_mp4_round_trip_truncation_and_errors(tmp_path):
    frames = [gradient(64, 48, f) for f in range(12)]
    path = tmp_path / "clip.mp4"
    io.write_mp4(frames, str(path))
    back = io.read_video(str(path))
    assert len(back) == 12
    for a, b in zip(back, frames):
        assert a.shape == (48, 64, 3) and a.dtype == np.float32
        assert np.abs(a - b).mean() < 0.03
    assert len(io.read_video(str(path), max_frames=5)) == 5

    cut = tmp_path / "cut.mp4"
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ValueError, match="cut.mp4"):
        io.read_video(str(cut))
    with pytest.raises(FileNotFoundError):
        io.read_video(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match="even"):
        io.write_mp4([np.zeros((48, 63, 3), np.float32)], str(tmp_path / "odd.mp4"))
    with pytest.raises(ValueError, match="frame 1"):
        io.write_mp4([frames[0], np.zeros((48, 32, 3), np.float32)], str(tmp_path / "sizes.mp4"))
    with pytest.raises(ValueError, match="no frames"):
        io.write_mp4([], str(tmp_path / "empty.mp4"))
    with pytest.raises(OSError):
        io.write_mp4(frames[:1], str(tmp_path / "no" / "such" / "folder.mp4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "cut.mp4"]


# ---- PNG ---------------------------------------------------------------------------------------

def test_png_exact_and_as_pillow_reads_it(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    rgb8 = rng.integers(0, 256, (7, 9, 3)).astype(np.float32) / 255
    io.write_png(rgb8, str(tmp_path / "rgb8.png"))
    np.testing.assert_array_equal(io.read_png(str(tmp_path / "rgb8.png")), rgb8)
    with Image.open(tmp_path / "rgb8.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), np.round(rgb8 * 255).astype(np.uint8))

    grey16 = rng.integers(0, 65536, (5, 6)).astype(np.float64) / 65535  # [H, W]: one channel
    io.write_png(grey16, str(tmp_path / "grey16.png"), bit_depth=16)
    back = io.read_png(str(tmp_path / "grey16.png"))
    assert back.shape == (5, 6, 1)
    np.testing.assert_array_equal(back[..., 0], grey16.astype(np.float32))
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(im).astype(np.int64), np.round(grey16 * 65535).astype(np.int64))

    rgba = rng.random((4, 4, 4)).astype(np.float32)
    io.write_png(rgba, str(tmp_path / "rgba.png"))
    with Image.open(tmp_path / "rgba.png") as im:
        assert im.mode == "RGBA"

    (tmp_path / "bad.png").write_bytes((tmp_path / "rgb8.png").read_bytes()[:60])
    with pytest.raises(ValueError, match="bad.png"):
        io.read_png(str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="bit_depth"):
        io.write_png(rgb8, str(tmp_path / "x.png"), bit_depth=12)


# ---- MurmurHash3 and Cryptomatte ids -------------------------------------------------------------

NAMES = ["", "a", "ab", "abc", "abcd", "abcde", "bunny", "CryptoObject", "piece_0001", "wall/left.brick_17",
         "é", "数字", "x" * 257, "\x00\x01\x02", "The quick brown fox jumps over the lazy dog"]


def test_murmur3_matches_mmh3():
    mmh3 = pytest.importorskip("mmh3")
    names = NAMES + [f"piece_{i}" for i in range(2000)]
    for name in names:
        assert io.murmur3_32(name) == mmh3.hash(name, signed=False), name
    for seed in (1, 0x9747B28C, 0xFFFFFFFF):
        for name in NAMES:
            assert io.murmur3_32(name, seed) == mmh3.hash(name, seed, signed=False), (name, seed)


def test_cryptomatte_ids_follow_the_specification():
    names = NAMES + [f"piece_{i}" for i in range(20000)]
    clamped = 0
    for name in names:
        want, bits = cryptomatte_float(name)
        got = io.cryptomatte_id(name)
        assert struct.pack("<f", got) == struct.pack("<I", bits), name
        assert np.isfinite(got) and want == got
        clamped += bits != io.murmur3_32(name)
    assert clamped > 0  # some names hit exponent 0 or 255 and were clamped


# ---- EXR ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered():
    track = derrumbe.Scene.load(str(EXAMPLES / "small.json")).simulate(progress=False)
    aovs = track.render(0, 6, 7, width=96, height=64)[0]
    names = [f"piece_{i:03d}" for i in range(track.num_pieces)]
    return aovs, names


def read_exr(path):
    """Header and channels (name -> Channel with .type() and .pixels) as the OpenEXR package reads them."""
    OpenEXR = pytest.importorskip("OpenEXR")
    f = OpenEXR.File(str(path), separate_channels=True)  # a closed File empties its channel dict: keep it open
    return f.header(), f.channels()


def srgb_to_linear(v):
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


# The widely published sRGB -> ACEScg (Bradford) matrix, to 4 decimals.
SRGB_TO_ACESCG = np.array([[0.6131, 0.3395, 0.0474], [0.0702, 0.9164, 0.0134], [0.0206, 0.1096, 0.8698]])


def test_exr_frame_as_openexr_reads_it(tmp_path, rendered):
    OpenEXR = pytest.importorskip("OpenEXR")
    mmh3 = pytest.importorskip("mmh3")
    aovs, names = rendered
    H, W = aovs.height, aovs.width
    beauty = gradient(W, H)
    world_to_camera = np.arange(16, dtype=np.float32).reshape(4, 4) / 7
    world_to_ndc = np.eye(4, dtype=np.float32) * 0.5 + 0.125
    path = tmp_path / "shot.1001.exr"
    io.write_exr_frame(str(path), beauty=beauty, color_space="acescg", aovs=aovs, piece_names=names,
                       world_to_camera=world_to_camera, world_to_ndc=world_to_ndc)

    header, channels = read_exr(path)
    halves = {"R", "G", "B", "A"}
    floats = {"depth.Z", "forward.u", "forward.v", "backward.u", "backward.v", "N.x", "N.y", "N.z", "coverage.A",
              "dust.A", "occlusion.A"} | {f"CryptoObject0{k}.{c}" for k in (0, 1) for c in "RGBA"}
    assert set(channels) == halves | floats
    for name in halves:
        assert channels[name].type() == OpenEXR.HALF and channels[name].pixels.dtype == np.float16, name
    for name in floats:
        assert channels[name].type() == OpenEXR.FLOAT and channels[name].pixels.dtype == np.float32, name
    assert header["compression"] == OpenEXR.ZIP_COMPRESSION

    linear = srgb_to_linear(beauty.astype(np.float64)) @ SRGB_TO_ACESCG.T
    rgb = np.stack([channels[c].pixels for c in "RGB"], axis=-1).astype(np.float64)
    np.testing.assert_allclose(rgb, linear, atol=2e-3)
    np.testing.assert_allclose(header["chromaticities"], [0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767],
                               atol=1e-6)
    np.testing.assert_array_equal(header["worldToCamera"], world_to_camera)
    np.testing.assert_array_equal(header["worldToNDC"], world_to_ndc)

    planes = derrumbe.aovs_to_tensor([aovs], ["Z", "id", "A", "forward.u"]).numpy()[0]
    depth, ids, alpha = planes[0], planes[1].astype(np.int64), planes[2]
    np.testing.assert_array_equal(channels["depth.Z"].pixels, depth)  # +inf kept where empty
    assert np.isinf(depth).any() and (ids >= 0).any()
    np.testing.assert_array_equal(channels["forward.u"].pixels, planes[3])
    np.testing.assert_array_equal(channels["coverage.A"].pixels, alpha)
    np.testing.assert_allclose(channels["A"].pixels.astype(np.float32), alpha, atol=1e-3)

    # Cryptomatte: metadata under the layer's key, manifest ids = converted mmh3 hashes.
    key = f"{mmh3.hash('CryptoObject', signed=False):08x}"[:7]
    prefix = f"cryptomatte/{key}/"
    assert header[prefix + "name"] == "CryptoObject"
    assert header[prefix + "hash"] == "MurmurHash3_32"
    assert header[prefix + "conversion"] == "uint32_to_float32"
    manifest = json.loads(header[prefix + "manifest"])
    assert set(manifest) == set(names)
    for name, hex_id in manifest.items():
        assert hex_id == f"{cryptomatte_float(name)[1]:08x}"
    expected_id = np.zeros((H, W), np.float32)
    for i, name in enumerate(names):
        expected_id[ids == i] = cryptomatte_float(name)[0]
    np.testing.assert_array_equal(channels["CryptoObject00.R"].pixels, expected_id)
    np.testing.assert_array_equal(channels["CryptoObject00.G"].pixels, np.where(ids >= 0, alpha, 0))
    for rest in ("CryptoObject00.B", "CryptoObject00.A", "CryptoObject01.R", "CryptoObject01.G",
                 "CryptoObject01.B", "CryptoObject01.A"):
        assert not channels[rest].pixels.any(), rest
    # Ids read back from the pixels are found in the manifest (what a Cryptomatte keyer does).
    seen = {struct.pack("<f", v).hex() for v in channels["CryptoObject00.R"].pixels[ids >= 0]}
    by_hex = {struct.pack("<I", int(h, 16)).hex(): n for n, h in manifest.items()}
    assert seen <= set(by_hex)


def test_exr_beauty_only_in_srgb_primaries(tmp_path):
    beauty = gradient(16, 8)
    path = tmp_path / "beauty.exr"
    io.write_exr_frame(str(path), beauty=beauty, color_space="srgb")
    header, channels = read_exr(path)
    assert set(channels) == {"R", "G", "B", "A"}
    np.testing.assert_allclose(header["chromaticities"], [0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290],
                               atol=1e-6)
    np.testing.assert_allclose(channels["G"].pixels.astype(np.float64), srgb_to_linear(beauty[..., 1]), atol=2e-3)
    assert (channels["A"].pixels == 1).all()
    assert "worldToCamera" not in header
    with pytest.raises(ValueError, match="colour space"):
        io.write_exr_frame(str(tmp_path / "x.exr"), beauty=beauty, color_space="rec2020")
    with pytest.raises(ValueError, match="nothing to write"):
        io.write_exr_frame(str(tmp_path / "x.exr"))
