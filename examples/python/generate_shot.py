"""Generate a shot end to end: simulate a collapse, render its conditioning passes, and sample
a Wan video model steered by the simulation (warped noise, SDEdit from the proxy render,
composition over the background, flow-warp energy), then decode the frames to PNG.

Without arguments it runs on the embedded default model: a tiny Wan2.1-architecture
transformer, VAE and umT5 text encoder with seeded random weights and a SentencePiece
tokenizer trained on a few sentences, built once into --cache. The pictures are then
noise-like (the weights are untrained) but every stage runs for real. Point --transformer,
--vae, --text-encoder and --tokenizer at diffusers/transformers directories (e.g. from
Wan-AI/Wan2.1-T2V-1.3B-Diffusers) to render with real weights.
"""
import argparse
import os
import time

import torch

import derrumbe

EXAMPLES = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_default_model(directory):
    """The embedded default model: tiny Wan2.1 components with seeded random weights."""
    import diffusers
    import sentencepiece
    import transformers

    if os.path.exists(os.path.join(directory, "done")):
        return
    torch.manual_seed(0)
    diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=64, freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=256).save_pretrained(os.path.join(directory, "transformer"))
    diffusers.AutoencoderKLWan(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                               temperal_downsample=[False, True, True]).save_pretrained(os.path.join(directory, "vae"))
    config = transformers.UMT5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    transformers.UMT5EncoderModel(config).save_pretrained(os.path.join(directory, "text_encoder"))
    words = ("a tall concrete building collapses into a street full of dust and debris while the camera "
             "holds steady on the falling floors at dusk with sparks glass smoke and rubble").split()
    lines = [" ".join(words[(i * 7) % len(words):] + words[: (i * 7) % len(words)]) for i in range(200)]
    os.makedirs(os.path.join(directory, "tokenizer"), exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=os.path.join(directory, "tokenizer", "spiece"), vocab_size=48,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2)
    open(os.path.join(directory, "done"), "w").close()


def to_video(frames, key, scale=1.0, offset=0.0):
    """Rendered AOVs -> [1, C, F, H, W]."""
    return (derrumbe.aovs_to_tensor(frames, key) * scale + offset).permute(1, 0, 2, 3).unsqueeze(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene", default=os.path.join(EXAMPLES, "scenes", "small.json"))
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/derrumbe/default-model"))
    parser.add_argument("--transformer"), parser.add_argument("--vae")
    parser.add_argument("--text-encoder"), parser.add_argument("--tokenizer")
    parser.add_argument("--prompt", default="a tall concrete building collapses into the street, dust and debris")
    parser.add_argument("--negative", default="blurry, static")
    parser.add_argument("--frames", type=int, default=17, help="1 + 4k")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--strength", type=float, default=0.85, help="SDEdit strength from the proxy render")
    parser.add_argument("--out", default="shot")
    args = parser.parse_args()

    build_default_model(args.cache)
    path = lambda given, name: given or os.path.join(args.cache, name)  # noqa: E731
    transformer = derrumbe.WanTransformer.load(path(args.transformer, "transformer"))
    vae = derrumbe.WanVae.load(path(args.vae, "vae"))
    encoder = derrumbe.UMT5Encoder.load(path(args.text_encoder, "text_encoder"))
    tokenizer = derrumbe.Tokenizer.load(path(args.tokenizer, "tokenizer"))
    timings = {}

    start = time.perf_counter()
    track = derrumbe.Scene.load(args.scene).simulate()
    timings["simulate"] = time.perf_counter() - start
    start = time.perf_counter()
    frames = track.render(0, 0, args.frames, width=args.width, height=args.height)
    timings["render"] = time.perf_counter() - start

    start = time.perf_counter()
    lh, lw = args.height // 8, args.width // 8
    fwd = derrumbe.aovs_to_tensor(frames, ["forward.u", "forward.v"])
    bwd = derrumbe.aovs_to_tensor(frames, ["backward.u", "backward.v"])
    noise = derrumbe.warp_noise(fwd, bwd, channels=16, factor=8, temporal_factor=4)  # [1, 16, F', lh, lw]
    proxy = vae.encode(to_video(frames, ["R", "G", "B"], 2.0, -1.0).clamp(-1, 1))  # the proxy render, encoded
    sigmas = derrumbe.schedules.flow_shift(args.steps, shift=3.0, spacing="unipc")
    x, tail = derrumbe.sdedit_start(proxy, noise, sigmas, args.strength)
    mask = derrumbe.prepare_mask(derrumbe.aovs_to_tensor(frames, ["A"])[:, 0], lh, lw, temporal_factor=4,
                                 dilate=4, feather=4)
    flow, valid = derrumbe.latent_flow(bwd, None, lh, lw, temporal_factor=4)
    max_length = 64
    cond = derrumbe.encode_prompts(tokenizer, encoder, [args.prompt], max_length=max_length)
    negative = derrumbe.encode_prompts(tokenizer, encoder, [args.negative], max_length=max_length)
    model = derrumbe.EnergyGuided(
        derrumbe.Guided(derrumbe.WanDenoiser(transformer, cond, negative, integer_timesteps=True), scale=5.0),
        [derrumbe.FlowWarpEnergy(flow, valid)], strength=0.05)
    timings["conditioning"] = time.perf_counter() - start

    start = time.perf_counter()
    latents = derrumbe.sample(model, x, tail, "uni_pc_bh2", order=2,
                              hooks=[derrumbe.Composite(proxy, mask, noise, free_tail_steps=2)])
    timings["sample"] = time.perf_counter() - start
    start = time.perf_counter()
    video = vae.decode(latents)  # [1, 3, F, H, W] in [-1, 1]
    timings["decode"] = time.perf_counter() - start

    import torchvision

    os.makedirs(args.out, exist_ok=True)
    pictures = ((video[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3)  # [F, 3, H, W]
    for f, picture in enumerate(pictures):
        torchvision.io.write_png(picture, os.path.join(args.out, f"frame.{f:04d}.png"))
    frames[0].write_exr(os.path.join(args.out, "aov.0000.exr"))
    print(f"{len(pictures)} frames of {args.width}x{args.height} in {args.out}/ "
          f"({track.num_pieces} pieces, {len(tail) - 1} of {args.steps} steps)")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
