"""Wan transformer forward and VAE decode: derrumbe (native LibTorch) against diffusers eager.

Question: is the native implementation as fast as diffusers' PyTorch modules on the same CPU,
and does it use no more memory? Both load the same save_pretrained directory (random weights)
and run the same inputs; each side runs in its own fresh process (so peak memory is its own),
within this one run. Prints JSON and the ratios diffusers/derrumbe for time and peak RSS.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

CONFIGS = {
    "tiny": {
        "transformer": dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                            out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
                            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
        "vae": dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                    temperal_downsample=[False, True, True]),
        "latent": [1, 16, 3, 16, 16], "text": [1, 16, 32],
    },
    # 8 layers of width 768 at 33 frames of 256x256 (latent 9 x 32 x 32, 2,304 tokens).
    "large": {
        "transformer": dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=64, in_channels=16,
                            out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=3072, num_layers=8,
                            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024),
        "vae": dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                    temperal_downsample=[False, True, True]),
        "latent": [1, 16, 9, 32, 32], "text": [1, 512, 4096],
    },
}

# Runs in a child process: load one side, time it, report seconds and peak RSS.
CHILD = r"""
import json, resource, sys, time, torch
side, what, directory, latent, text, repeats = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5]), int(sys.argv[6])
torch.manual_seed(0)
x = torch.randn(latent)
ctx = torch.randn(text)
t = torch.full((latent[0],), 500.0)
if side == "derrumbe":
    import derrumbe
    if what == "transformer":
        model = derrumbe.WanTransformer.load(directory)
        run = lambda: model(x, t, ctx)
    else:
        model = derrumbe.WanVae.load(directory)
        run = lambda: model.decode(x, normalized=False)
else:
    import diffusers
    if what == "transformer":
        model = diffusers.WanTransformer3DModel.from_pretrained(directory).eval()
        run = lambda: model(x, t, ctx, return_dict=False)[0]
    else:
        model = diffusers.AutoencoderKLWan.from_pretrained(directory).eval()
        run = lambda: model.decode(x, return_dict=False)[0]
with torch.inference_mode():
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
print(json.dumps({"seconds": min(times), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(side, what, directory, cfg, repeats):
    out = subprocess.run([sys.executable, "-c", CHILD, side, what, directory, json.dumps(cfg["latent"]),
                          json.dumps(cfg["text"]), str(repeats)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "large"], choices=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import diffusers
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            cfg = CONFIGS[name]
            torch.manual_seed(0)
            paths = {"transformer": os.path.join(tmp, name + "_transformer"), "vae": os.path.join(tmp, name + "_vae")}
            diffusers.WanTransformer3DModel(**cfg["transformer"]).save_pretrained(paths["transformer"])
            diffusers.AutoencoderKLWan(**cfg["vae"]).save_pretrained(paths["vae"])
            for what in ["transformer", "vae"]:
                ours = child("derrumbe", what, paths[what], cfg, args.repeats)
                theirs = child("diffusers", what, paths[what], cfg, args.repeats)
                rows.append({"config": name, "module": what, "derrumbe": ours, "diffusers": theirs,
                             "time_ratio": theirs["seconds"] / ours["seconds"],
                             "memory_ratio": theirs["peak_rss_mb"] / ours["peak_rss_mb"]})
    print(json.dumps(rows, indent=2))
    print(f"\n{'config':>7} {'module':>12} {'ours s':>9} {'diffusers s':>12} {'speed':>7} {'ours MB':>9} "
          f"{'diffusers MB':>13} {'memory':>7}   (ratios: diffusers / derrumbe)")
    for r in rows:
        print(f"{r['config']:>7} {r['module']:>12} {r['derrumbe']['seconds']:>9.3f} {r['diffusers']['seconds']:>12.3f} "
              f"{r['time_ratio']:>7.2f} {r['derrumbe']['peak_rss_mb']:>9.0f} {r['diffusers']['peak_rss_mb']:>13.0f} "
              f"{r['memory_ratio']:>7.2f}")


if __name__ == "__main__":
    main()
