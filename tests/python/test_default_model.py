"""The shipped default model (assets/default-model, trained by training/, issue 11): its weights
load through derrumbe's native loaders and compute what diffusers computes from the same files,
a 4-step shot makes pictures (the expected shape, not constant), and it denoises held-out latents
better than the same architecture untrained does."""
import os

import pytest
import torch
from safetensors import safe_open

import derrumbe

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = derrumbe.default_model_path()
HELDOUT = os.path.join(ROOT, "tests", "python", "data", "default_model_heldout.safetensors")
SCENE = os.path.join(ROOT, "examples", "scenes", "small.json")


def test_the_shipped_transformer_computes_what_diffusers_computes_from_its_files():
    ours = derrumbe.WanTransformer.load(os.path.join(MODEL, "transformer"))
    theirs = diffusers.WanTransformer3DModel.from_pretrained(os.path.join(MODEL, "transformer")).float().eval()
    assert ours.config["in_channels"] == 32 and ours.config["out_channels"] == 16  # the proxy's latents concatenated
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, 2, 6, 10, generator=gen)
    context = torch.randn(1, 16, theirs.config.text_dim, generator=gen)
    t = torch.tensor([700.0])
    with torch.no_grad():
        expected = theirs(x, t, context, return_dict=False)[0]
    assert torch.allclose(ours(x, t, context), expected, atol=1e-4, rtol=1e-4)


def test_the_shipped_text_encoder_and_vae_compute_what_the_references_compute():
    bundle = derrumbe.WanBundle.load(MODEL)
    prompt = "a 4-storey red brick building collapses after a demolition charge, with a thick dust cloud, noon"
    ours = derrumbe.encode_prompts(bundle.tokenizer, bundle.text_encoder, [prompt])
    tokenizer = transformers.T5Tokenizer.from_pretrained(os.path.join(MODEL, "tokenizer"))
    encoder = transformers.UMT5EncoderModel.from_pretrained(os.path.join(MODEL, "text_encoder")).float().eval()
    tokens = tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        theirs = encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    n = tokens.input_ids.shape[1]
    assert torch.allclose(ours[:, :n], theirs, atol=1e-4) and ours[:, n:].abs().max() == 0
    vae = diffusers.AutoencoderKLWan.from_pretrained(os.path.join(MODEL, "vae")).float().eval()
    video = torch.rand(1, 3, 5, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(video).latent_dist.mean
    assert torch.allclose(bundle.vae.encode(video, normalize=False), mean, atol=1e-4)


def test_a_4_step_shot_on_the_default_model_makes_pictures(tmp_path):
    result = derrumbe.Shot(SCENE, frames=9, steps=4, progress=False, output={"dir": str(tmp_path), "exr": False}).render()
    frames = result.frames
    assert frames.shape == (9, 3, 96, 160) and torch.isfinite(frames).all()
    assert frames.std() > 0.02  # not a constant picture
    assert (frames[-1] - frames[0]).abs().mean() > 1e-3  # nor a still one
    assert os.path.getsize(tmp_path / "shot.mp4") > 1000


def untrained_copy(directory):
    """The default model's transformer and text encoder, initialized as training starts (seed 0)."""
    torch.manual_seed(0)
    config = diffusers.WanTransformer3DModel.load_config(os.path.join(MODEL, "transformer"))
    diffusers.WanTransformer3DModel.from_config(config).save_pretrained(str(directory / "transformer"))
    config = transformers.UMT5Config.from_pretrained(os.path.join(MODEL, "text_encoder"))
    transformers.UMT5EncoderModel(config).save_pretrained(str(directory / "text_encoder"))
    return str(directory)


def heldout_loss(transformer_dir, text_encoder_dir) -> float:
    """Flow-matching loss on the committed held-out latents (their control and caption given),
    at fixed times and noise: the training's objective, computed by derrumbe's native modules."""
    bundle = derrumbe.WanBundle.load_files(transformer_dir, os.path.join(MODEL, "vae"), text_encoder_dir,
                                           os.path.join(MODEL, "tokenizer"))
    gen = torch.Generator().manual_seed(7)
    total, count = 0.0, 0
    with safe_open(HELDOUT, "pt") as f:
        clips = sorted(k.split("_")[1] for k in f.keys() if k.startswith("latents_"))
        for i in clips:
            x0, control = f.get_tensor(f"latents_{i}").float()[None], f.get_tensor(f"control_{i}").float()[None]
            context = derrumbe.encode_prompts(bundle.tokenizer, bundle.text_encoder, [f.metadata()[f"caption_{i}"]])
            for t in (0.3, 0.6, 0.9):
                noise = torch.randn(x0.shape, generator=gen)
                x_t = (1 - t) * x0 + t * noise
                prediction = bundle.transformer(torch.cat([x_t, control], 1), torch.tensor([t * 1000]), context)
                total += (prediction - (noise - x0)).pow(2).mean().item()
                count += 1
    return total / count


def test_the_trained_model_beats_the_untrained_one_on_held_out_latents(tmp_path):
    untrained = untrained_copy(tmp_path)
    trained_loss = heldout_loss(os.path.join(MODEL, "transformer"), os.path.join(MODEL, "text_encoder"))
    untrained_loss = heldout_loss(os.path.join(untrained, "transformer"), os.path.join(untrained, "text_encoder"))
    assert trained_loss < 0.7 * untrained_loss, (trained_loss, untrained_loss)
