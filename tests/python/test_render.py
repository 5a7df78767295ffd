"""Rendering from Python: AOVs of a simulated collapse as tensors and files."""
from pathlib import Path

import pytest
import torch

import derrumbe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenes"


@pytest.fixture(scope="module")
def frames():
    track = derrumbe.Scene.load(str(EXAMPLES / "small.json")).simulate(progress=False)
    return track, track.render(0, 8, 12, width=160, height=96)


def test_aovs_as_tensors(frames):
    track, aovs = frames
    assert len(aovs) == 4 and aovs[0].width == 160 and aovs[0].height == 96
    names = derrumbe.aov_channel_names()
    x = derrumbe.aovs_to_tensor(aovs, names)
    assert x.shape == (4, len(names), 96, 160) and x.dtype == torch.float32
    ids = x[:, names.index("id")]
    assert (ids >= -1).all() and (ids >= 0).any()
    # Resizing averages the flow over the pixels it merges and scales each component with its
    # own axis: halving both sides halves u and v, halving the height halves v alone.
    flow = ["forward.u", "forward.v"]
    full = derrumbe.aovs_to_tensor(aovs, flow)
    assert full.abs().max() > 1  # pieces move by more than a pixel
    half = derrumbe.aovs_to_tensor(aovs, flow, 48, 80)
    assert half.shape == (4, 2, 48, 80)
    torch.testing.assert_close(half, torch.nn.functional.avg_pool2d(full, 2) / 2, rtol=1e-5, atol=1e-5)
    flat = derrumbe.aovs_to_tensor(aovs, flow, 48, 160)
    per_axis = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)
    torch.testing.assert_close(flat, torch.nn.functional.avg_pool2d(full, (2, 1)) * per_axis, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown channel"):
        derrumbe.aovs_to_tensor(aovs, ["albedo"])


def test_files_and_errors(frames, tmp_path):
    track, aovs = frames
    aovs[0].write_exr(str(tmp_path / "f.exr"))
    aovs[0].write_png("flow", str(tmp_path / "flow.png"))
    assert (tmp_path / "f.exr").stat().st_size > 1000
    assert (tmp_path / "flow.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="camera 3 outside"):
        track.render(3, 0, 1)
    with pytest.raises(ValueError, match="render"):
        track.render(0, 0, 1, width=0)
    with pytest.raises(ValueError):
        aovs[0].write_png("sparkles", str(tmp_path / "x.png"))
