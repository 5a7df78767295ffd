"""A shot on control models: the control video the simulation's passes make (proxy render,
depth, coverage), encoded by the model's VAE, reaches a channel-concatenation model (as
Wan2.1-Fun-Control) and a VACE model; the cache keys follow the control settings; a control
named for a model that takes none is a clear error. The models are the default model with its
transformer replaced by a tiny seeded one (plain, concatenation or VACE)."""
import json
import os
import shutil

import pytest
import torch

import derrumbe

diffusers = pytest.importorskip("diffusers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENE = os.path.join(ROOT, "examples", "scenes", "small.json")
STAGES = ["simulate", "render", "text", "conditioning", "noise", "sample", "decode"]


def with_transformer(directory, cls, **config):
    """The default model with its transformer replaced by a tiny one (seeded, perturbed weights)."""
    shutil.copytree(derrumbe.default_model_path(), directory)
    shutil.rmtree(directory / "transformer")
    with open(directory / "text_encoder" / "config.json") as f:
        text_dim = json.load(f)["d_model"]
    torch.manual_seed(0)
    model = cls(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, out_channels=16, text_dim=text_dim,
                freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True, rope_max_seq_len=256, **config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    model.save_pretrained(str(directory / "transformer"))
    return str(directory)


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    return with_transformer(tmp_path_factory.mktemp("m") / "plain", diffusers.WanTransformer3DModel, in_channels=16)


@pytest.fixture(scope="module")
def concat_model(tmp_path_factory):
    return with_transformer(tmp_path_factory.mktemp("m") / "concat", diffusers.WanTransformer3DModel, in_channels=48)


@pytest.fixture(scope="module")
def vace_model(tmp_path_factory):
    return with_transformer(tmp_path_factory.mktemp("m") / "vace", diffusers.WanVACETransformer3DModel, in_channels=16,
                         vace_layers=[0, 1], vace_in_channels=96)


def shot(model, cache, out, **guide):
    return derrumbe.Shot(SCENE, model=model, frames=5, width=64, height=48, steps=3, cache_dir=str(cache),
                         output={"dir": str(out), "mp4": False, "exr": False}, guide=guide, progress=False).render()


def entries(cache, stage):
    return sorted(e for e in os.listdir(os.path.join(cache, stage)) if not e.startswith("."))


def conditioning(cache):
    from safetensors.torch import load_file
    return [load_file(os.path.join(cache, "conditioning", e)) for e in entries(cache, "conditioning")]


@pytest.mark.parametrize("which", ["concat", "vace"])
def test_the_control_video_reaches_the_model(request, tmp_path, which):
    model = request.getfixturevalue(f"{which}_model")
    cache = tmp_path / "cache"
    auto = shot(model, cache, tmp_path / "auto")
    (tensors,) = conditioning(cache)
    expected_channels = 16 if which == "concat" else 96  # latents, or VACE's 2 x 16 latents + 8 x 8 mask
    assert tensors["control"].shape == (1, expected_channels, 2, 6, 8)
    if which == "concat":  # "auto" is the proxy render, the same latents the SDEdit start uses
        assert torch.equal(tensors["control"], tensors["proxy"])

    depth = shot(model, cache, tmp_path / "depth", control="depth")
    assert len(entries(cache, "conditioning")) == 2 and len(entries(cache, "noise")) == 1
    none = shot(model, cache, tmp_path / "none", control="none")
    for a, b in [(auto, depth), (auto, none), (depth, none)]:
        assert (a.frames - b.frames).abs().max() > 1e-4  # each control changes the picture
    coverage = shot(model, cache, tmp_path / "coverage", control="coverage")
    assert len(entries(cache, "conditioning")) == 4
    assert (coverage.frames - depth.frames).abs().max() > 1e-4

    # the scale reuses the conditioning and samples again; for VACE it changes the picture
    scaled = shot(model, cache, tmp_path / "scaled", control="depth", control_scale=0.3)
    assert {s.name: s.reused for s in scaled.stages}["conditioning"]
    if which == "vace":
        assert (scaled.frames - depth.frames).abs().max() > 1e-4
    again = shot(model, cache, tmp_path / "again", control="depth")
    assert torch.equal(again.frames, depth.frames)

    params = json.loads(open(os.path.join(tmp_path, "depth", "shot.json")).read())["params"]
    assert params["guide"]["control"] == "depth"


def test_a_control_for_a_model_without_one_is_an_error(plain_model, tmp_path):
    with pytest.raises(ValueError, match="guide.control = 'depth', but the model .* takes no control video"):
        shot(plain_model, tmp_path / "cache", tmp_path / "out", control="depth")
    with pytest.raises(ValueError, match="guide.control"):
        shot(plain_model, tmp_path / "cache", tmp_path / "out", control="normals")
    none = shot(plain_model, tmp_path / "cache", tmp_path / "none", control="none")  # explicitly
    auto = shot(plain_model, tmp_path / "cache", tmp_path / "auto")
    assert torch.equal(none.frames, auto.frames)


def test_the_command_line_takes_the_control(plain_model, concat_model, tmp_path):
    import subprocess
    import sys
    small = ["--frames", "5", "--width", "64", "--height", "48", "--steps", "2", "--no-mp4", "--no-exr"]
    run = [sys.executable, "-m", "derrumbe", "generate", SCENE, *small]
    ok = subprocess.run([*run, "--model", concat_model, "--control", "coverage", "--control-scale", "0.5", "--out",
                         str(tmp_path / "ok")], capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    guide = json.loads((tmp_path / "ok" / "shot.json").read_text())["params"]["guide"]
    assert guide["control"] == "coverage" and guide["control_scale"] == 0.5
    bad = subprocess.run([*run, "--model", plain_model, "--control", "depth", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "takes no control video" in bad.stderr


def test_control_guidance_samples_again_with_the_negative_branch_uncontrolled(concat_model, tmp_path):
    cache = tmp_path / "cache"
    plain = shot(concat_model, cache, tmp_path / "plain")
    guided = shot(concat_model, cache, tmp_path / "guided", control_guidance=True)
    assert {s.name: s.reused for s in guided.stages}["conditioning"]
    assert (guided.frames - plain.frames).abs().max() > 1e-4
