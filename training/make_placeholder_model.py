"""Writes the placeholder default model to assets/default-model: tiny Wan2.1-architecture
components with seeded random weights, in the diffusers layout a downloaded Wan model has
(model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/).

The pictures it makes are noise-like (the weights are untrained); it lets every stage of a
shot run for real on a fresh machine until the trained default model replaces it.
Deterministic: running it again writes the same weights.
"""
import os
import sys

import common
import diffusers
import sentencepiece
import torch
import transformers


def main(directory):
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
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2,
        num_threads=1)
    os.remove(os.path.join(directory, "tokenizer", "spiece.vocab"))
    common.write_pipeline_files(directory)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "assets", "default-model"))
