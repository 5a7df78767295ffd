"""Trains the default model's VAE: a small Wan2.1 VAE (diffusers' AutoencoderKLWan, common.VAE)
on the Cycles frames of the training clips, so that its latents describe path-traced pictures.

    python training/train_vae.py --data data --out runs/vae [--steps 1200] [--minutes 110]

Loss: L1 reconstruction of random 5-frame 64x64 windows (random horizontal flips) plus a
small KL term that keeps the posterior a Gaussian near the prior. Resumable: the state is
saved every 5 minutes and at the time limit (runs/vae/checkpoint.pt), a rerun continues. When
the last step is done it measures the per-channel mean and std of the latents over every
tenth training clip (the normalization Wan's VAE config carries as latents_mean / latents_std) and
writes the finished VAE with save_pretrained to OUT/vae (float32), and the loss curve to
OUT/vae_loss.png.
"""
import argparse
import os

import torch
from diffusers import AutoencoderKLWan

import common

# A training window: 5 frames (1 + 4: the causal VAE's first frame and one chunk of 4) and a
# 64x64 crop; the VAE is convolutional, and crops give 7x more windows an hour than whole
# 9-frame clips (measured: 10 s a step of two 9 x 96 x 160 windows on the two cores).
WINDOW, CROP = 5, 64
KL_WEIGHT = 1e-4
STATS_EVERY = 10


def windows(clips, batch: int, gen: torch.Generator, window: int = WINDOW) -> torch.Tensor:
    """`batch` random windows [B, 3, window, CROP, CROP] in [-1, 1], randomly mirrored."""
    out = []
    for _ in range(batch):
        frames = clips[int(torch.randint(len(clips), (1,), generator=gen))]
        first = int(torch.randint(frames.shape[0] - window + 1, (1,), generator=gen))
        top = int(torch.randint(frames.shape[2] - CROP + 1, (1,), generator=gen))
        left = int(torch.randint(frames.shape[3] - CROP + 1, (1,), generator=gen))
        x = common.to_vae(frames[first:first + window, :, top:top + CROP, left:left + CROP])[0]
        if bool(torch.rand((), generator=gen) < 0.5):
            x = x.flip(-1)
        out.append(x)
    return torch.stack(out)


def loss_of(model: AutoencoderKLWan, x: torch.Tensor, gen: torch.Generator):
    posterior = model.encode(x).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
    recon = model.decode(z).sample
    l1 = (recon - x).abs().mean()
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1 - posterior.logvar).mean()
    return l1, kl


@torch.no_grad()
def latent_statistics(model: AutoencoderKLWan, clips) -> tuple:
    """Per-channel mean and std of the posterior means over every STATS_EVERY-th training clip
    (an encode takes 7 s a clip: all 300 would add 35 minutes for the same numbers)."""
    clips = clips[::STATS_EVERY]
    total, total_sq, count = 0.0, 0.0, 0
    for frames in clips:
        mu = model.encode(common.to_vae(frames)).latent_dist.mean.double()  # [1, z, f, h, w]
        total = total + mu.sum(dim=(0, 2, 3, 4))
        total_sq = total_sq + mu.pow(2).sum(dim=(0, 2, 3, 4))
        count += mu[:, 0].numel()
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--out", default="runs/vae")
    args = common.run_arguments(parser, steps=1200, batch=4, lr=3e-4)

    folders = common.clip_folders(args.data, "train")
    if not folders:
        raise SystemExit(f"no training clips under {args.data}/train (run training/make_data.py)")
    clips = [torch.load(os.path.join(f, "frames.pt")) for f in folders]
    model = AutoencoderKLWan(**common.VAE).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    step, losses, seconds = 0, {"l1": [], "kl": []}, 0.0  # seconds: of the earlier runs it resumes
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    state = common.resume(checkpoint, model, optimizer, gen)
    if state is not None:
        step, losses, seconds = state["step"], state["losses"], state["seconds"]
    clock = common.Clock(args.minutes * 60)

    def save():
        common.save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                            "gen": gen.get_state(), "step": step, "losses": losses,
                                            "seconds": seconds + clock.elapsed(), "clips": len(clips)})
        common.plot_losses(losses, os.path.join(args.out, "vae_loss.png"), "VAE training (Cycles frames)")

    stop = min(args.steps, args.stop_at or args.steps)
    while step < stop and not clock.out_of_time():
        for group in optimizer.param_groups:
            group["lr"] = common.cosine_lr(step, args.steps, args.lr)
        l1, kl = loss_of(model, windows(clips, args.batch, gen), gen)
        optimizer.zero_grad(set_to_none=True)
        (l1 + KL_WEIGHT * kl).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses["l1"].append(l1.item())
        losses["kl"].append(kl.item())
        if step % 50 == 0:
            print(f"step {step}/{args.steps} l1 {sum(losses['l1'][-50:]) / 50:.4f} "
                  f"kl {sum(losses['kl'][-50:]) / 50:.3f} {clock.elapsed():.0f} s", flush=True)
        if clock.checkpoint_due():
            save()
    save()
    if common.stopped_early(step, args.steps):
        return
    model.eval()
    mean, std = latent_statistics(model, clips)
    model.register_to_config(latents_mean=mean, latents_std=std)
    model.save_pretrained(os.path.join(args.out, "vae"), safe_serialization=True)
    print(f"finished: {os.path.join(args.out, 'vae')} (latents std {min(std):.3f} .. {max(std):.3f}) "
          f"after {seconds + clock.elapsed():.0f} s in all")


if __name__ == "__main__":
    main()
