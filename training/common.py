"""What the training scripts share: the default model's architecture, the data set on disk,
checkpoints that survive a kill, and the loss curves.

Every run is resumable: it saves its whole state (weights, optimizer, step, the losses so far,
every random generator) atomically every few minutes and at its time limit, and a rerun with
the same arguments continues from there as if it had not stopped.
"""
import json
import math
import os
import random
import time
from typing import Any, Dict, List, Optional

import torch

# ---- the default model's architecture (Wan2.1 family, loaded by derrumbe's native loaders) ----

WIDTH, HEIGHT, FRAMES = 160, 96, 33  # training/scenes.py's clips
VAE = dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])
TEXT = dict(vocab_size=1024, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
            relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
            dense_act_fn="gelu_new", is_gated_act=True)
# in_channels: the noisy latents and the control latents (channel concatenation, as Fun-Control)
TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=32,
                   out_channels=16, text_dim=TEXT["d_model"], freq_dim=256, ffn_dim=1024, num_layers=8,
                   cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=256)
MAX_SEQUENCE_LENGTH = 512  # the shot's (ShotParams.max_sequence_length): trained as it runs
FLOW_SHIFT = 3.0  # the scheduler's shift, also the training's timestep distribution


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """The shot's transfer function for the proxy render (src/pipeline/shot.cpp)."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.pow(1 / 2.4) - 0.055)


# ---- the data set (training/make_data.py) ----------------------------------------------------


def clip_folders(data: str, split: str) -> List[str]:
    """The finished clips of a split (a clip.json is written last), sorted by seed."""
    root = os.path.join(data, split)
    if not os.path.isdir(root):
        return []
    seeds = sorted(int(n) for n in os.listdir(root) if n.isdigit() and os.path.exists(os.path.join(root, n, "clip.json")))
    return [os.path.join(root, str(s)) for s in seeds]


def load_clip(folder: str) -> Dict[str, Any]:
    """{"frames": uint8 [F, 3, H, W] (Cycles), "proxy": float [F, 3, H, W] in [0, 1] (the proxy
    render as the shot encodes it), "conditioning": float16 passes, "clip": its JSON}."""
    conditioning = torch.load(os.path.join(folder, "conditioning.pt"))
    with open(os.path.join(folder, "clip.json")) as f:
        clip = json.load(f)
    rgb = [clip["channels"].index(c) for c in ("R", "G", "B")]
    return {"frames": torch.load(os.path.join(folder, "frames.pt")), "conditioning": conditioning,
            "proxy": linear_to_srgb(conditioning[:, rgb].float()), "clip": clip}


def to_vae(frames: torch.Tensor) -> torch.Tensor:
    """[F, 3, H, W] (uint8, or float in [0, 1]) -> the VAE's [1, 3, F, H, W] in [-1, 1]."""
    x = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
    return (x * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0)


# ---- runs: checkpoints, time limits, losses -----------------------------------------------------


def rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Written under a temporary name and renamed: a kill leaves the previous checkpoint."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(dict(state, rng=rng_state()), path + ".part")
    os.replace(path + ".part", path)


def load_checkpoint(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.exists(path):
        return None
    state = torch.load(path, weights_only=False)
    set_rng_state(state["rng"])
    return state


def resume(path: str, model, optimizer, gen: torch.Generator) -> Optional[Dict[str, Any]]:
    """Loads a run's checkpoint into its model, optimizer and generator (a fresh run: None).
    The state also holds the run's "step", "losses" and "seconds" so far."""
    state = load_checkpoint(path)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["gen"])
        print(f"resumed at step {state['step']} after {state['seconds']:.0f} s")
    return state


class Clock:
    """A run's time limit and checkpoint interval, in seconds of this process."""

    def __init__(self, limit_s: float, every_s: float = 300.0):
        self.start = self.last = time.monotonic()
        self.limit_s, self.every_s = limit_s, every_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def out_of_time(self) -> bool:
        return self.elapsed() >= self.limit_s

    def checkpoint_due(self) -> bool:
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            return True
        return False


def stopped_early(step: int, total: int) -> bool:
    """Whether a run ended before its last step (time limit or --stop-at); it says so."""
    if step < total:
        print(f"stopped at step {step} of {total}; rerun to continue")
        return True
    return False


def plot_losses(losses: Dict[str, List[float]], path: str, title: str, smooth: int = 50,
                every: Optional[Dict[str, int]] = None) -> None:
    """The loss curves as a PNG: a running mean over `smooth` steps of each series logged every
    step, the others (every[name] steps apart) as they are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in losses.items():
        if not values:
            continue
        spacing = (every or {}).get(name, 1)
        if spacing == 1:
            v = torch.tensor(values, dtype=torch.float64)
            k = max(1, min(smooth, len(values)))
            mean = torch.nn.functional.avg_pool1d(v.view(1, 1, -1), k, stride=1).view(-1)
            ax.plot(range(k, len(values) + 1), mean.tolist(), label=f"{name} (mean of {k})")
        else:
            ax.plot([i * spacing for i in range(len(values))], values, "o-", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path + ".part.png", dpi=100)
    plt.close(fig)
    os.replace(path + ".part.png", path)


def cosine_lr(step: int, total: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def run_arguments(parser, steps: int, batch: int, lr: float):
    """The arguments every training run takes; parses them and seeds the run."""
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--minutes", type=float, default=110.0, help="stop (with a checkpoint) after this long")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop (with a checkpoint) at this step, as the time limit does")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    return args


def write_pipeline_files(folder: str) -> None:
    """The scheduler (Wan's UniPC, flow shift 3) and model_index.json of a diffusers Wan directory."""
    import diffusers

    diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=FLOW_SHIFT,
                                      num_train_timesteps=1000).save_pretrained(os.path.join(folder, "scheduler"))
    index = {"_class_name": "WanPipeline", "_diffusers_version": diffusers.__version__,
             "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
             "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
             "scheduler": ["diffusers", "UniPCMultistepScheduler"]}
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
