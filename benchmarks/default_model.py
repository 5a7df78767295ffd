"""The default model measured on the held-out clips (issue 11), against the path-traced truth.

    python benchmarks/default_model.py [--data data] [--clips 4] [--seeds 2] [--steps 12]
                                       [--model DIR] [--out docs/default-model]

For each held-out clip (training/make_data.py: Cycles frames, derrumbe's passes, the scene and
caption; never trained on) the same shot runs through derrumbe.Shot:

* picture quality: PSNR and SSIM of the generated frames against the Cycles frames, beside the
  proxy render against them, the untrained model (the same architecture, seeded random
  weights) against them, and the Cycles frames through the model's VAE (what the latents can
  hold at best);
* motion adherence, for the guidance ladder: text-to-video with plain noise -> + warped noise ->
  + SDEdit from the proxy -> + flow-warp energy -> + control video (-> + control guidance, CFG
  toward the control). Optical flow is measured on
  the generated video with OpenCV's DIS and compared with the simulation's exact backward flow:
  endpoint error on the moving pieces, and the IoU of the moving mask (|flow| > 0.5 px) with the
  simulation's moving pieces (Physics-IQ's motion-mask IoU). Both are calibrated on the Cycles
  frames themselves (the floor), and the spread over seeds is reported;
* the prompt's effect: the same shot with the caption's material and time of day rewritten,
  once as a concrete building at noon and once as a red brick one at golden hour, and whether
  the building gets redder and the frame warmer, as the words ask;
* the main job's time: a whole shot of 33 frames (simulate to MP4 + EXR) on this machine.

Writes OUT/results.json, OUT/ladder.md and OUT/strip.png (proxy | generated | Cycles).
"""
import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List

import numpy
import torch

import derrumbe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "training"))
import common  # noqa: E402

RUNGS = {  # the guidance ladder, each rung adding one thing to the previous
    "text-to-video, plain noise": dict(noise_warp=False, sdedit_strength=1.0, flow_energy=0.0, control="none"),
    "+ warped noise": dict(noise_warp=True, sdedit_strength=1.0, flow_energy=0.0, control="none"),
    "+ SDEdit from the proxy": dict(noise_warp=True, sdedit_strength=0.85, flow_energy=0.0, control="none"),
    "+ flow-warp energy": dict(noise_warp=True, sdedit_strength=0.85, flow_energy=0.05, control="none"),
    "+ control video": dict(noise_warp=True, sdedit_strength=0.85, flow_energy=0.05, control="proxy"),
    "+ control guidance": dict(noise_warp=True, sdedit_strength=0.85, flow_energy=0.05, control="proxy",
                               control_guidance=True),
}
MOVING_PX = 0.5  # a pixel moves when its flow is longer than this


# ---- metrics ---------------------------------------------------------------------------------------


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Wang et al. 2004 on [F, 3, H, W] in [0, 1]: 11x11 Gaussian window (sigma 1.5), per channel."""
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-x.pow(2) / (2 * 1.5 ** 2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 11, 11).to(a.dtype)

    def blur(t):
        return torch.nn.functional.conv2d(t, window, groups=3)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean().item()


def measured_flow(frames: torch.Tensor) -> torch.Tensor:
    """DIS optical flow from each frame to the previous one, [F - 1, 2, H, W] pixels (frames 1..F-1)."""
    import cv2

    grey = [cv2.cvtColor((f.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(numpy.uint8), cv2.COLOR_RGB2GRAY)
            for f in frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return torch.stack([torch.from_numpy(dis.calc(grey[f], grey[f - 1], None)).permute(2, 0, 1)
                        for f in range(1, len(grey))])


def motion_scores(frames: torch.Tensor, exact: torch.Tensor, coverage: torch.Tensor) -> Dict[str, float]:
    """Endpoint error on the moving pieces and the moving-mask IoU. exact: the simulation's backward
    flow [F, 2, H, W]; coverage [F, H, W]."""
    flow = measured_flow(frames)
    exact, coverage = exact[1:], coverage[1:]
    moving = (exact.norm(dim=1) > MOVING_PX) & (coverage > 0.5)
    measured_moving = flow.norm(dim=1) > MOVING_PX
    epe = (flow - exact).norm(dim=1)[moving].mean().item() if moving.any() else float("nan")
    union = (moving | measured_moving).sum().item()
    iou = (moving & measured_moving).sum().item() / union if union else float("nan")
    return {"epe": epe, "iou": iou}


def look(frames: torch.Tensor, coverage: torch.Tensor) -> Dict[str, float]:
    """Redness of the building (R - B inside the coverage), warmth (R - B) and brightness of the frame."""
    inside = coverage > 0.5
    r, b = frames[:, 0], frames[:, 2]
    return {"building_redness": (r - b)[inside].mean().item() if inside.any() else float("nan"),
            "warmth": (r - b).mean().item(), "brightness": frames.mean().item()}


# ---- shots -----------------------------------------------------------------------------------------


def shot(clip: Dict, model: str, seed: int, steps: int, out: str, prompt: str = None, **guide) -> torch.Tensor:
    window = clip["window"]
    params = dict(model=model, frames=window["frames"], start=window["first_frame"], width=common.WIDTH,
                  height=common.HEIGHT, steps=steps, seed=seed, prompt=prompt or clip["caption"],
                  guide=dict(composite=False, **guide), cache_dir=os.path.join(out, "cache"),
                  output={"dir": os.path.join(out, "shot"), "mp4": False, "exr": False}, progress=False)
    return derrumbe.Shot(derrumbe.Scene.from_json(json.dumps(clip["scene"])), **params).render().frames


MATERIAL_WORDS = ("red brick", "concrete", "glass and steel", "steel-framed")  # training/scenes.py's
TIME_WORDS = ("golden hour", "morning", "noon", "overcast")


def prompt_twins(caption: str):
    """The caption rewritten twice: a concrete building at noon, and a red brick one at golden
    hour. The second asks for a redder building and a warmer frame."""
    def rewritten(material: str, time_of_day: str) -> str:
        text = caption
        for words, new in ((MATERIAL_WORDS, material), (TIME_WORDS, time_of_day)):
            for w in words:
                if w in text:
                    text = text.replace(w, new)
                    break
        return text
    return rewritten("concrete", "noon"), rewritten("red brick", "golden hour")


def untrained_model(trained: str, out: str) -> str:
    """The trained model's files with seeded random weights in the same architecture."""
    import shutil

    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    folder = os.path.join(out, "untrained")
    if os.path.isdir(folder):
        return folder
    shutil.copytree(trained, folder)
    torch.manual_seed(0)
    for name, model in [("transformer", WanTransformer3DModel.from_config(
                            WanTransformer3DModel.load_config(os.path.join(trained, "transformer")))),
                        ("vae", AutoencoderKLWan.from_config(AutoencoderKLWan.load_config(os.path.join(trained, "vae")))),
                        ("text_encoder", UMT5EncoderModel(UMT5Config.from_pretrained(os.path.join(trained, "text_encoder"))))]:
        shutil.rmtree(os.path.join(folder, name))
        model.save_pretrained(os.path.join(folder, name), safe_serialization=True)
    return folder


def vae_roundtrip(vae, frames: torch.Tensor) -> torch.Tensor:
    """frames [F, 3, H, W] in [0, 1] encoded and decoded by the model's VAE (derrumbe's native one)."""
    return ((vae.decode(vae.encode(common.to_vae(frames)))[0].permute(1, 0, 2, 3) + 1) / 2).clamp(0, 1)


def spread(values: List[float]) -> Dict[str, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def strip(proxy: torch.Tensor, generated: torch.Tensor, cycles: torch.Tensor, path: str) -> None:
    """Rows proxy | generated | Cycles, columns four frames across the clip."""
    from PIL import Image

    picks = torch.linspace(0, proxy.shape[0] - 1, 4).round().long()
    rows = [torch.cat(list(v[picks]), dim=2) for v in (proxy, generated, cycles)]
    image = (torch.cat(rows, dim=1).permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(numpy.uint8)
    Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.NEAREST).save(path)


# ---- the run ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "data"))
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--model", default="", help="a Wan model directory (default: the default model)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "default-model"))
    args = parser.parse_args()
    folders = common.clip_folders(args.data, "heldout")[: args.clips]
    if not folders:
        raise SystemExit(f"no held-out clips under {args.data}/heldout (run training/make_data.py)")
    model = args.model or derrumbe.default_model_path()
    work = tempfile.mkdtemp(prefix="derrumbe-bench-")
    untrained = untrained_model(model, work)
    vae = derrumbe.WanVae.load(os.path.join(model, "vae"))
    os.makedirs(args.out, exist_ok=True)

    rows: Dict[str, Dict[str, List[float]]] = {}

    def record(row: str, **values: float) -> None:
        for k, v in values.items():
            rows.setdefault(row, {}).setdefault(k, []).append(v)

    prompt_effect = []
    for index, folder in enumerate(folders):
        data = common.load_clip(folder)
        clip = data["clip"]
        cycles = data["frames"].float() / 255
        cond = data["conditioning"].float()
        channels = clip["channels"]
        exact = cond[:, [channels.index("backward.u"), channels.index("backward.v")]]
        coverage = cond[:, channels.index("A")]
        record("Cycles frames (the floor)", **motion_scores(cycles, exact, coverage))
        record("proxy render", psnr=psnr(data["proxy"], cycles), ssim=ssim(data["proxy"], cycles),
               **motion_scores(data["proxy"], exact, coverage))
        decoded = vae_roundtrip(vae, cycles)
        record("Cycles frames through the VAE (the ceiling)", psnr=psnr(decoded, cycles), ssim=ssim(decoded, cycles),
               **motion_scores(decoded, exact, coverage))
        for seed in range(args.seeds):
            for rung, guide in RUNGS.items():
                frames = shot(clip, model, seed, args.steps, work, **guide)
                record(rung, psnr=psnr(frames, cycles), ssim=ssim(frames, cycles),
                       **motion_scores(frames, exact, coverage))
                if index == 0 and seed == 0 and rung == "+ control video":
                    strip(data["proxy"], frames, cycles, os.path.join(args.out, "strip.png"))
            frames = shot(clip, untrained, seed, args.steps, work, **RUNGS["+ control video"])
            record("untrained model (+ control video)", psnr=psnr(frames, cycles), ssim=ssim(frames, cycles),
                   **motion_scores(frames, exact, coverage))
        # the prompt's effect: the twin prompts, seed 0, the control-video rung
        plain, red_warm = prompt_twins(clip["caption"])
        a = look(shot(clip, model, 0, args.steps, work, prompt=plain, **RUNGS["+ control video"]), coverage)
        b = look(shot(clip, model, 0, args.steps, work, prompt=red_warm, **RUNGS["+ control video"]), coverage)
        prompt_effect.append({"prompts": [plain, red_warm], "looks": [a, b],
                              "as_asked": {"building_redness": b["building_redness"] > a["building_redness"],
                                           "warmth": b["warmth"] > a["warmth"]}})

    # the main job's time: a whole shot of the first held-out clip, from a cold cache, MP4 + EXR
    clip = common.load_clip(folders[0])["clip"]
    start = time.perf_counter()
    derrumbe.Shot(derrumbe.Scene.from_json(json.dumps(clip["scene"])), model=model, frames=common.FRAMES,
                  start=clip["window"]["first_frame"], prompt=clip["caption"], cache_dir=os.path.join(work, "cold"),
                  output={"dir": os.path.join(work, "main-job")}, progress=False).render()
    main_job_s = time.perf_counter() - start

    table = {row: {k: spread(v) for k, v in values.items()} for row, values in rows.items()}
    results = {"clips": [os.path.basename(f) for f in folders], "seeds": args.seeds, "steps": args.steps,
               "model": model, "table": table, "prompt_effect": prompt_effect, "main_job_s": main_job_s,
               "threads": torch.get_num_threads()}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    lines = ["| | PSNR (dB) | SSIM | flow EPE on moving pieces (px) | moving-mask IoU |", "|---|---|---|---|---|"]
    for row, values in table.items():
        cell = [f"{values[k]['mean']:.3g} ± {values[k]['std']:.2g}" if k in values else "" for k in
                ("psnr", "ssim", "epe", "iou")]
        lines.append(f"| {row} | " + " | ".join(cell) + " |")
    lines.append("")
    lines.append(f"{len(folders)} held-out clips x {args.seeds} seeds, {args.steps} steps (mean ± std over clips and "
                 f"seeds). Main job (33 frames, simulate to MP4 + EXR): {main_job_s:.1f} s.")
    lines += ["", "| prompts (concrete, noon -> red brick, golden hour) | building redness (R - B) | warmth (R - B) "
             "| brightness | as asked |", "|---|---|---|---|---|"]
    for p in prompt_effect:
        a, b = p["looks"]
        change = [f"{a[k]:.3f} -> {b[k]:.3f}" for k in a]
        verdict = ", ".join(f"{k}: {'yes' if ok else 'no'}" for k, ok in p["as_asked"].items())
        lines.append(f"| {p['prompts'][1]} | " + " | ".join(change) + f" | {verdict} |")
    with open(os.path.join(args.out, "ladder.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
