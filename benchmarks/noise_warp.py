"""Noise warping throughput: derrumbe's NoiseWarper against a PyTorch implementation.

Question: how many frames per second does derrumbe warp 16-channel noise on a 480x832 grid
(a 60x104 latent grid upsampled by 8, the Wan 480p setting) along the flow of a simulated
collapse, and how does that compare with a straightforward vectorized PyTorch implementation
of the same algorithm (push/pull nearest-pixel transport, flow-consistency occlusion,
re-Gaussianized copies, weighted merges, sub-pixel offsets, latent read-out), written below,
on the same flows in the same run? Both use every core torch is allowed (torch.get_num_threads()).
The PyTorch version draws its random values with torch.randn instead of the counter-based
generator; the work is the same. Prints JSON and the ratio (PyTorch time / derrumbe time).
"""
import argparse
import json
import time

import torch

import derrumbe

SCENE = {
    "version": 1, "fps": 24, "duration": 1.5, "seed": 3, "intensity": 0.7,
    "buildings": [{"footprint": [16, 16], "floors": 6, "bays": [4, 4], "chunks_per_panel": 4}],
    "triggers": [{"type": "charge", "time": 0.1, "building": 0, "floors": [0, 1], "energy": 8e6}],
    "cameras": [{"name": "street", "keys": [{"time": 0, "position": [6, 4, 34], "target": [0, 9, 0]},
                                            {"time": 1.5, "position": [-2, 5, 30], "target": [0, 8, 0]}]}],
    "limits": {"max_pieces": 100000},
}


def nearest(x, y, height, width):
    rx, ry = torch.floor(x + 0.5), torch.floor(y + 0.5)
    inside = (rx >= 0) & (ry >= 0) & (rx < width) & (ry < height)
    index = ry.clamp(0, height - 1).long() * width + rx.clamp(0, width - 1).long()
    return torch.where(inside, index, torch.full_like(index, -1)), inside


class TorchWarper:
    """The same algorithm as derrumbe.NoiseWarper, vectorized with PyTorch tensor ops."""

    def __init__(self, latent_h, latent_w, channels, factor, tolerance=1.0, seed=0):
        self.h, self.w, self.k, self.c = latent_h, latent_w, factor, channels
        self.H, self.W = latent_h * factor, latent_w * factor
        self.gen = torch.Generator().manual_seed(seed)
        P = self.H * self.W
        self.z = torch.randn(P, channels, generator=self.gen)
        self.wt = torch.ones(P)
        self.d = torch.zeros(P, 2)
        self.tol2 = tolerance * tolerance
        self.ys = torch.arange(self.H, dtype=torch.float32).repeat_interleave(self.W)
        self.xs = torch.arange(self.W, dtype=torch.float32).repeat(self.H)

    def step(self, forward, backward):
        H, W, C = self.H, self.W, self.c
        P = H * W
        fu, fv = forward[0].flatten(), forward[1].flatten()
        bu, bv = backward[0].flatten(), backward[1].flatten()
        every = torch.arange(P)

        def consistent(p, q):
            return (fu[p] + bu[q]) ** 2 + (fv[p] + bv[q]) ** 2 <= self.tol2

        # Pushes (contraction).
        px, py = self.xs + self.d[:, 0] + fu, self.ys + self.d[:, 1] + fv
        target, ok = nearest(px, py, H, W)
        ok &= consistent(every, target.clamp(min=0))
        pushers = every[ok]
        targets = target[ok]
        push_count = torch.bincount(targets, minlength=P)
        # Pulls (expansion) for targets without a push.
        sx, sy = self.xs + bu, self.ys + bv
        source, okp = nearest(sx, sy, H, W)
        okp &= (push_count == 0) & consistent(source.clamp(min=0), every)
        pulled = every[okp]
        sources = source[okp]
        pulls = torch.bincount(sources, minlength=P)
        n = ok.long() + pulls
        # Copy index of each pull among its source's pulls, in target order.
        order = torch.argsort(sources, stable=True)
        start = torch.cumsum(pulls, 0) - pulls
        rank = torch.empty_like(sources)
        rank[order] = torch.arange(len(sources)) - start[sources[order]]
        # Re-Gaussianized copies: z / sqrt(n) + e_i - mean(e) for sources used n >= 2 times.
        nf = n.clamp(min=1).float()
        multi = n >= 2
        push_multi = multi[pushers]
        pull_multi = multi[sources]
        e_push = torch.randn(int(push_multi.sum()), C, generator=self.gen)
        e_pull = torch.randn(int(pull_multi.sum()), C, generator=self.gen)
        esum = torch.zeros(P, C)
        esum.index_add_(0, pushers[push_multi], e_push)
        esum.index_add_(0, sources[pull_multi], e_pull)
        emean = esum / nf[:, None]
        push_vals = self.z[pushers].clone()
        s = pushers[push_multi]
        push_vals[push_multi] = self.z[s] / nf[s].sqrt()[:, None] + e_push - emean[s]
        pull_vals = self.z[sources].clone()
        s = sources[pull_multi]
        pull_vals[pull_multi] = self.z[s] / nf[s].sqrt()[:, None] + e_pull - emean[s]
        del rank  # the copy index only addresses the counter-based draws in derrumbe
        # Weighted merges at push targets.
        ws = (self.wt / nf)[pushers]
        z = torch.zeros(P, C).index_add_(0, targets, ws[:, None] * push_vals)
        w1 = torch.zeros(P).index_add_(0, targets, ws)
        w2 = torch.zeros(P).index_add_(0, targets, ws * ws)
        dx = torch.zeros(P).index_add_(0, targets, ws * (px[pushers] - self.xs[targets]))
        dy = torch.zeros(P).index_add_(0, targets, ws * (py[pushers] - self.ys[targets]))
        pushed = push_count > 0
        z[pushed] /= w2[pushed].sqrt()[:, None]
        wt = torch.ones(P)
        d = torch.zeros(P, 2)
        wt[pushed] = w1[pushed].clamp(1e-20, 1e20)
        d[pushed, 0] = dx[pushed] / w1[pushed]
        d[pushed, 1] = dy[pushed] / w1[pushed]
        # Pulled copies.
        z[pulled] = pull_vals
        wt[pulled] = (self.wt[sources] / nf[sources]).clamp(1e-20, 1e20)
        d[pulled, 0] = self.xs[sources] + self.d[sources, 0] - sx[pulled]
        d[pulled, 1] = self.ys[sources] + self.d[sources, 1] - sy[pulled]
        # Fresh noise where nothing arrived.
        fresh = ~pushed & ~okp
        z[fresh] = torch.randn(int(fresh.sum()), C, generator=self.gen)
        self.z, self.wt, self.d = z, wt, d

    def latent(self):
        h, w, k, C = self.h, self.w, self.k, self.c
        num = (self.z * self.wt[:, None]).view(h, k, w, k, C).sum((1, 3))
        den = (self.wt * self.wt).view(h, k, w, k).sum((1, 3)).sqrt()
        return (num / den[..., None]).permute(2, 0, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--factor", type=int, default=8)
    args = parser.parse_args()
    lh, lw = 60, 104
    H, W = lh * args.factor, lw * args.factor
    track = derrumbe.Scene.from_json(json.dumps(SCENE)).simulate(progress=False)
    frames = track.render(0, 6, 6 + args.frames, width=W, height=H)
    fwd = derrumbe.aovs_to_tensor(frames, ["forward.u", "forward.v"])
    bwd = derrumbe.aovs_to_tensor(frames, ["backward.u", "backward.v"])
    moving = float((fwd.abs().sum(1) > 0).float().mean())

    def run(warper):
        out = [warper.latent()]
        start = time.perf_counter()
        for t in range(1, args.frames):
            warper.step(fwd[t - 1], bwd[t])
            out.append(warper.latent())
        return (args.frames - 1) / (time.perf_counter() - start), torch.stack(out, 1)

    ours_fps, ours = run(derrumbe.NoiseWarper(lh, lw, channels=args.channels, factor=args.factor))
    torch_fps, theirs = run(TorchWarper(lh, lw, args.channels, args.factor))
    # Same algorithm: both outputs are N(0, 1), and the frame-to-frame correlation (how much
    # noise moved rather than being replaced) agrees.
    def stats(z):
        corr = torch.corrcoef(torch.stack([z[:, 1:].flatten(), z[:, :-1].flatten()]))[0, 1]
        return {"mean": float(z.mean()), "std": float(z.std()), "frame_to_frame_corr": float(corr)}

    result = {
        "grid": [H, W], "latent": [lh, lw], "channels": args.channels, "frames": args.frames,
        "threads": torch.get_num_threads(), "moving_pixel_fraction": moving,
        "derrumbe_fps": ours_fps, "pytorch_fps": torch_fps, "speedup": ours_fps / torch_fps,
        "derrumbe_stats": stats(ours), "pytorch_stats": stats(theirs),
    }
    print(json.dumps(result, indent=2))
    print(f"\nnoise warp {H}x{W} grid, {args.channels} channels, {torch.get_num_threads()} threads: "
          f"derrumbe {ours_fps:.1f} fps, PyTorch {torch_fps:.2f} fps, ratio {ours_fps / torch_fps:.1f}x")


if __name__ == "__main__":
    main()
