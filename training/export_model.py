"""Writes the trained default model to assets/default-model in the diffusers layout a downloaded
Wan model has (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/),
its weights stored as float16 safetensors (derrumbe's loaders take them to float32).

    python training/export_model.py --vae runs/vae_decoder/vae --run runs/transformer --out assets/default-model

It also writes the few KB of held-out latents the test suite measures the shipped model on
(tests/python/data/default_model_heldout.safetensors): crops of the first held-out clips' latents
and control latents, with their captions.
"""
import argparse
import os
import shutil

import torch
from safetensors.torch import save_file
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5EncoderModel

import common

LIMIT_MB = 40.0  # the weights committed to the repository, all components together
TEST_LATENTS = os.path.join(os.path.dirname(__file__), "..", "tests", "python", "data",
                            "default_model_heldout.safetensors")
TEST_CLIPS, TEST_CROP = 2, (slice(None), slice(0, 2), slice(3, 9), slice(5, 15))  # [16, 2, 6, 10] each


def folder_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 2**20


def write_test_latents(latents: str, out: str) -> None:
    """latents_<i> and control_<i> (float16) and the captions (metadata) of the first held-out clips."""
    folder = os.path.join(latents, "heldout")
    items = [torch.load(os.path.join(folder, name)) for name in sorted(os.listdir(folder))[:TEST_CLIPS]]
    tensors = {f"{kind}_{i}": item[kind][TEST_CROP].to(torch.float16).contiguous()
               for i, item in enumerate(items) for kind in ("latents", "control")}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(tensors, out, metadata={f"caption_{i}": item["caption"] for i, item in enumerate(items)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", default="runs/vae_decoder/vae", help="the VAE with the fine-tuned decoder")
    parser.add_argument("--run", default="runs/transformer", help="train_transformer.py's output folder")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "assets", "default-model"))
    parser.add_argument("--latents", default="runs/latents", help="encode_latents.py's output folder")
    parser.add_argument("--test-latents", default=TEST_LATENTS)
    args = parser.parse_args()
    staging = args.out.rstrip("/") + ".part"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for name, cls, source in [("vae", AutoencoderKLWan, args.vae),
                              ("transformer", WanTransformer3DModel, os.path.join(args.run, "transformer")),
                              ("text_encoder", UMT5EncoderModel, os.path.join(args.run, "text_encoder"))]:
        cls.from_pretrained(source).to(torch.float16).save_pretrained(os.path.join(staging, name),
                                                                       safe_serialization=True)
    os.makedirs(os.path.join(staging, "tokenizer"))
    shutil.copy(os.path.join(args.run, "tokenizer", "spiece.model"), os.path.join(staging, "tokenizer"))
    common.write_pipeline_files(staging)
    size = folder_mb(staging)
    if size > LIMIT_MB:
        raise SystemExit(f"the model is {size:.1f} MB, over the {LIMIT_MB} MB the repository takes")
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(staging, args.out)
    write_test_latents(args.latents, args.test_latents)
    print(f"wrote {args.out}: {size:.1f} MB, and {args.test_latents}")


if __name__ == "__main__":
    main()
