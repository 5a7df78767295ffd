"""Fine-tunes the trained VAE's decoder on 13-frame windows, its encoder frozen.

    python training/finetune_vae_decoder.py --data data --vae runs/vae/vae --out runs/vae_decoder \\
        [--steps 600] [--minutes 110]

Why: train_vae.py trains on 5-frame windows, the causal VAE's first frame and one chunk of 4.
A 33-frame clip has 8 chunks, and every chunk after the first decodes from the cache a previous
chunk left, which those windows never show. Measured on the first held-out clip: frames 0-4
decode at 23 dB, frames 5-32 at 11 to 14 dB, and the whole clip at 13.5 dB. A 13-frame window
(1 + 3 chunks) shows chunks that follow chunks. The encoder stays as it is, so the latents the
transformer was trained on (encode_latents.py) stay valid, and so do the VAE's latent statistics.

The loss is train_vae.py's (L1 of a decoded posterior sample). The reconstruction PSNR of the
first held-out clips, on frames 0-4 and on frames 5 on, is measured before and after. Resumable
as train_vae.py; writes OUT/vae (float32, the same config) and OUT/vae_decoder_loss.png.
"""
import argparse
import json
import math
import os

import torch
from diffusers import AutoencoderKLWan

import common
from train_vae import loss_of, windows

WINDOW = 13  # 1 + 3 chunks of 4: chunks that decode from a previous chunk's cache
HELDOUT_CLIPS = 4
FIRST_CHUNK = 5  # frames 0-4: the first frame and the first chunk of 4


@torch.no_grad()
def heldout_psnr(model: AutoencoderKLWan, clips) -> dict:
    """The reconstruction PSNR (posterior means, [0, 1] scale) of the first chunk (frames 0-4) and
    of the later ones, over the held-out clips."""
    errors = {"frames 0-4": [], "frames 5+": []}
    for frames in clips:
        x = common.to_vae(frames)
        squared = (model.decode(model.encode(x).latent_dist.mean).sample - x).pow(2).mean(dim=(0, 1, 3, 4)) / 4
        errors["frames 0-4"].append(squared[:FIRST_CHUNK].mean().item())
        errors["frames 5+"].append(squared[FIRST_CHUNK:].mean().item())
    return {name: 10 * math.log10(1 / (sum(e) / len(e))) for name, e in errors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--vae", default="runs/vae/vae", help="train_vae.py's finished VAE")
    parser.add_argument("--out", default="runs/vae_decoder")
    parser.add_argument("--window", type=int, default=WINDOW, help="frames a training window holds (1 + 4k)")
    args = common.run_arguments(parser, steps=600, batch=4, lr=1e-4)

    folders = common.clip_folders(args.data, "train")
    if not folders:
        raise SystemExit(f"no training clips under {args.data}/train (run training/make_data.py)")
    clips = [torch.load(os.path.join(f, "frames.pt")) for f in folders]
    heldout = [torch.load(os.path.join(f, "frames.pt"))
               for f in common.clip_folders(args.data, "heldout")[:HELDOUT_CLIPS]]
    model = AutoencoderKLWan.from_pretrained(args.vae)
    frozen = list(model.encoder.parameters()) + list(model.quant_conv.parameters())
    for p in frozen:
        p.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 2)
    step, losses, seconds, before = 0, {"l1": []}, 0.0, None
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    state = common.resume(checkpoint, model, optimizer, gen)
    if state is not None:
        step, losses, seconds, before = state["step"], state["losses"], state["seconds"], state["before"]
    clock = common.Clock(args.minutes * 60)
    if before is None:
        before = heldout_psnr(model.eval(), heldout)
        print(f"held-out reconstruction before: {before}", flush=True)
    model.train()

    def save():
        common.save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                            "gen": gen.get_state(), "step": step, "losses": losses,
                                            "seconds": seconds + clock.elapsed(), "before": before})
        common.plot_losses(losses, os.path.join(args.out, "vae_decoder_loss.png"),
                           f"VAE decoder fine-tuning ({args.window}-frame windows)")

    stop = min(args.steps, args.stop_at or args.steps)
    while step < stop and not clock.out_of_time():
        for group in optimizer.param_groups:
            group["lr"] = common.cosine_lr(step, args.steps, args.lr, warmup=50)
        l1, _ = loss_of(model, windows(clips, args.batch, gen, window=args.window), gen)
        optimizer.zero_grad(set_to_none=True)
        l1.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        step += 1
        losses["l1"].append(l1.item())
        if step % 50 == 0:
            print(f"step {step}/{args.steps} l1 {sum(losses['l1'][-50:]) / 50:.4f} {clock.elapsed():.0f} s", flush=True)
        if clock.checkpoint_due():
            save()
    save()
    if common.stopped_early(step, args.steps):
        return
    after = heldout_psnr(model.eval(), heldout)
    model.save_pretrained(os.path.join(args.out, "vae"), safe_serialization=True)
    with open(os.path.join(args.out, "heldout_psnr.json"), "w") as f:
        json.dump({"before": before, "after": after, "clips": HELDOUT_CLIPS}, f, indent=2)
    print(f"held-out reconstruction PSNR before {before}, after {after}")
    print(f"finished: {os.path.join(args.out, 'vae')} after {seconds + clock.elapsed():.0f} s in all")


if __name__ == "__main__":
    main()
