"""The default model's training runs (training/train_vae.py, train_transformer.py,
export_model.py) on a tiny synthetic data set in make_data.py's format: a run stopped part way
and rerun ends with exactly the weights of an uninterrupted run, the results load through
derrumbe's native loaders, and the exported model is a bundle the shot can load."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

import derrumbe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINING = os.path.join(ROOT, "training")
sys.path.insert(0, TRAINING)
import common  # noqa: E402

CHANNELS = ["R", "G", "B", "inverse_depth", "A", "dust", "backward.u", "backward.v"]
FRAMES = 9  # shorter than the real 33 to keep the test quick; the scripts take any 1 + 4k


def write_clip(folder, seed, caption):
    gen = torch.Generator().manual_seed(seed)
    os.makedirs(folder)
    # smooth moving patterns (a random low-resolution field, upsampled, shifted frame by frame)
    field = torch.rand(1, 3, 12, 20, generator=gen)
    big = torch.nn.functional.interpolate(field, size=(96, 160 + FRAMES * 2), mode="bilinear")
    frames = torch.stack([big[0, :, :, 2 * f:2 * f + 160] for f in range(FRAMES)])
    torch.save((frames * 255).to(torch.uint8), os.path.join(folder, "frames.pt"))
    torch.save(torch.rand(FRAMES, len(CHANNELS), 96, 160, generator=gen).half(), os.path.join(folder, "conditioning.pt"))
    with open(os.path.join(folder, "clip.json"), "w") as f:
        json.dump({"seed": seed, "caption": caption, "channels": CHANNELS}, f)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_clip(root / "train" / "0", 0, "a 3-storey concrete building collapses after an earthquake, noon")
    write_clip(root / "train" / "1", 1, "a 5-storey red brick building collapses after a demolition charge, morning")
    write_clip(root / "heldout" / "1000000", 2, "a 4-storey glass and steel building collapses, golden hour")
    return str(root)


def run(script, *args):
    threads = ["--threads", "1"] if script.startswith(("train_", "finetune_")) else []
    result = subprocess.run([sys.executable, os.path.join(TRAINING, script), *map(str, args), *threads],
                            capture_output=True, text=True, timeout=900, cwd=TRAINING)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def digest(folder):
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder)) if name.endswith(".safetensors")}


@pytest.fixture(scope="module")
def vae(data, tmp_path_factory):
    straight = tmp_path_factory.mktemp("vae_straight")
    run("train_vae.py", "--data", data, "--out", straight, "--steps", 3)
    return str(straight)


def test_a_stopped_vae_run_resumes_to_the_same_weights(data, vae, tmp_path):
    assert "stopped at step 1 of 3" in run("train_vae.py", "--data", data, "--out", tmp_path, "--steps", 3,
                                          "--stop-at", 1)
    assert not os.path.exists(tmp_path / "vae")
    assert "resumed at step 1 after" in run("train_vae.py", "--data", data, "--out", tmp_path, "--steps", 3)
    assert digest(tmp_path / "vae") == digest(os.path.join(vae, "vae"))
    assert os.path.getsize(tmp_path / "vae_loss.png") > 1000


def test_the_trained_vae_loads_natively_with_its_latent_statistics(vae):
    config = json.load(open(os.path.join(vae, "vae", "config.json")))
    assert len(config["latents_mean"]) == len(config["latents_std"]) == 16 and min(config["latents_std"]) > 0
    ours = derrumbe.WanVae.load(os.path.join(vae, "vae"))
    latents = ours.encode(torch.rand(1, 3, 5, 96, 160) * 2 - 1)
    assert latents.shape == (1, 16, 2, 12, 20) and torch.isfinite(latents).all()


def test_the_decoder_run_keeps_the_encoder_and_resumes_to_the_same_weights(data, vae, tmp_path):
    from safetensors.torch import load_file

    args = ["--data", data, "--vae", os.path.join(vae, "vae"), "--steps", 3, "--window", FRAMES]
    run("finetune_vae_decoder.py", *args, "--out", tmp_path / "straight")
    assert "stopped at step 1 of 3" in run("finetune_vae_decoder.py", *args, "--out", tmp_path / "stopped",
                                          "--stop-at", 1)
    assert "resumed at step 1 after" in run("finetune_vae_decoder.py", *args, "--out", tmp_path / "stopped")
    assert digest(tmp_path / "stopped" / "vae") == digest(tmp_path / "straight" / "vae")

    weights = "diffusion_pytorch_model.safetensors"
    before = load_file(os.path.join(vae, "vae", weights))
    after = load_file(str(tmp_path / "straight" / "vae" / weights))
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # the latents stay valid
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    config = lambda folder: json.load(open(os.path.join(folder, "config.json")))  # noqa: E731
    assert config(tmp_path / "straight" / "vae")["latents_std"] == config(os.path.join(vae, "vae"))["latents_std"]
    psnr = json.load(open(tmp_path / "straight" / "heldout_psnr.json"))
    assert set(psnr["before"]) == set(psnr["after"]) == {"frames 0-4", "frames 5+"}
    derrumbe.WanVae.load(str(tmp_path / "straight" / "vae"))


@pytest.fixture(scope="module")
def latents(data, vae, tmp_path_factory):
    out = tmp_path_factory.mktemp("latents")
    assert "train: 2 clips encoded" in run("encode_latents.py", "--data", data, "--vae", os.path.join(vae, "vae"),
                                           "--out", out)
    return str(out)


def test_the_latents_are_the_shots_encoding_and_a_rerun_skips_them(data, vae, latents):
    item = torch.load(os.path.join(latents, "heldout", "1000000.pt"))
    assert item["latents"].shape == item["control"].shape == (16, 3, 12, 20)
    clip = common.load_clip(os.path.join(data, "heldout", "1000000"))
    ours = derrumbe.WanVae.load(os.path.join(vae, "vae"))
    assert torch.allclose(item["control"], ours.encode(common.to_vae(clip["proxy"]))[0], atol=1e-5)
    assert item["caption"] == clip["clip"]["caption"]
    again = run("encode_latents.py", "--data", data, "--vae", os.path.join(vae, "vae"), "--out", latents)
    assert "train: 0 clips encoded" in again and "heldout: 0 clips encoded" in again


@pytest.fixture(scope="module")
def transformer_run(data, latents, tmp_path_factory):
    straight = tmp_path_factory.mktemp("transformer_straight")
    run("train_transformer.py", "--data", data, "--latents", latents, "--out", straight, "--steps", 3,
        "--batch", 2, "--heldout-every", 2)
    return str(straight)


def test_a_stopped_transformer_run_resumes_to_the_same_weights(data, latents, transformer_run, tmp_path):
    args = ["--data", data, "--latents", latents, "--out", tmp_path, "--steps", 3, "--batch", 2,
            "--heldout-every", 2]
    assert "stopped at step 2 of 3" in run("train_transformer.py", *args, "--stop-at", 2)
    assert "resumed at step 2 after" in run("train_transformer.py", *args)
    for part in ("transformer", "text_encoder"):
        assert digest(tmp_path / part) == digest(os.path.join(transformer_run, part))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert len(state["losses"]["train"]) == 3 and len(state["losses"]["held-out (EMA)"]) == 2
    assert os.path.getsize(tmp_path / "transformer_loss.png") > 1000


def test_the_exported_model_is_a_bundle_the_shot_loads(vae, latents, transformer_run, tmp_path):
    out = tmp_path / "default-model"
    test_latents = tmp_path / "heldout.safetensors"
    run("export_model.py", "--vae", os.path.join(vae, "vae"), "--run", transformer_run, "--latents", latents,
        "--out", out, "--test-latents", test_latents)
    bundle = derrumbe.WanBundle.load(str(out))
    assert bundle.latent_channels == 16
    header = open(out / "transformer" / "diffusion_pytorch_model.safetensors", "rb").read(4096)
    assert b'"F16"' in header and b'"F32"' not in header  # stored as float16
    # derrumbe's tokenizer reads the training's tokens (transformers' T5Tokenizer on the same file)
    from transformers import T5Tokenizer
    text = "a 5-storey concrete building collapses, noon"  # words of the training captions
    theirs = T5Tokenizer.from_pretrained(str(out / "tokenizer"))(text).input_ids
    assert [int(i) for i in derrumbe.Tokenizer.load(str(out / "tokenizer")).encode(text)] == theirs
    assert theirs[-1] == 1 and 2 not in theirs  # </s> at the end, no <unk>
    from safetensors import safe_open
    with safe_open(str(test_latents), "pt") as f:  # the held-out crops the suite measures the model on
        assert sorted(f.keys()) == ["control_0", "latents_0"]  # the synthetic data set holds one held-out clip
        assert f.get_tensor("latents_0").shape == (16, 2, 6, 10) and f.get_tensor("latents_0").dtype == torch.float16
        assert f.metadata()["caption_0"] == torch.load(os.path.join(latents, "heldout", "1000000.pt"))["caption"]
