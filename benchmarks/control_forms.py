"""Why the default model takes its control by channel concatenation rather than VACE: the cost of
each form at the default model's size, in derrumbe's native transformer, side by side.

    python benchmarks/control_forms.py [--repeats 5]

Both transformers have the default model's width and depth (training/common.py); the VACE one
has VACE blocks after every other layer (as Wan2.1-VACE-1.3B has them) and its 96-channel
context, the concatenation one in_channels = 32 (noisy + control latents). Prints parameters,
seconds per forward pass on a 33-frame 160x96 shot's latents with a 512-token prompt, and the
ratios.
"""
import argparse
import os
import sys
import tempfile
import time

import torch
from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

import derrumbe

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"))
import common  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    layers = common.TRANSFORMER["num_layers"]
    configs = {
        "channel concatenation": (WanTransformer3DModel, dict(common.TRANSFORMER)),
        "VACE": (WanVACETransformer3DModel, dict(common.TRANSFORMER, in_channels=16,
                                                 vace_layers=list(range(0, layers, 2)), vace_in_channels=96)),
    }
    latents = torch.randn(1, 16, 1 + (common.FRAMES - 1) // 4, common.HEIGHT // 8, common.WIDTH // 8)
    context = torch.randn(1, common.MAX_SEQUENCE_LENGTH, common.TEXT["d_model"])
    t = torch.tensor([500.0])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cls, config) in configs.items():
            model = cls(**config)
            folder = os.path.join(tmp, name.replace(" ", "_"))
            model.save_pretrained(folder, safe_serialization=True)
            ours = derrumbe.WanTransformer.load(folder)
            params = sum(p.numel() for p in model.parameters())
            if name == "VACE":
                control = torch.randn(1, 96, *latents.shape[2:])
                seconds = timed(lambda: ours(latents, t, context, control=control), args.repeats)
            else:
                x = torch.cat([latents, torch.randn_like(latents)], 1)
                seconds = timed(lambda: ours(x, t, context), args.repeats)
            results[name] = (params, seconds)
            print(f"{name:22s} {params / 1e6:6.2f} M parameters  {seconds * 1000:8.1f} ms a forward pass")
    (p_cat, s_cat), (p_vace, s_vace) = results["channel concatenation"], results["VACE"]
    print(f"VACE / concatenation: {p_vace / p_cat:.2f}x parameters, {s_vace / s_cat:.2f}x time "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
