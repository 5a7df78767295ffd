"""Writes the trained default model to assets/default-model in the diffusers layout a downloaded
Wan model has (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/),
its weights stored as float16 safetensors (derrumbe's loaders take them to float32).

    python training/export_model.py --vae runs/vae/vae --run runs/transformer --out assets/default-model
"""
import argparse
import os
import shutil

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5EncoderModel

import common

LIMIT_MB = 40.0  # the weights committed to the repository, all components together


def folder_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", default="runs/vae/vae")
    parser.add_argument("--run", default="runs/transformer", help="train_transformer.py's output folder")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "assets", "default-model"))
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
    print(f"wrote {args.out}: {size:.1f} MB")


if __name__ == "__main__":
    main()
