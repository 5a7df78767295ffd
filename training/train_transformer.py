"""Trains the default model's transformer and text encoder together, by flow matching on the
latents of the Cycles frames, conditioned on the proxy render (channel concatenation, as
Wan2.1-Fun-Control takes a control video) and on the clip's caption.

    python training/train_transformer.py --data data --latents runs/latents --out runs/transformer \\
        [--steps 1800] [--minutes 110]

In order, each part resumable:
1. the tokenizer: a SentencePiece unigram model (T5's ids: pad 0, eos 1, unk 2) trained on the
   training captions, OUT/tokenizer/spiece.model;
2. the latents that training/encode_latents.py wrote: every clip's Cycles frames and proxy
   render encoded by the trained VAE (normalized posterior means);
3. training: x_t = (1 - t) x0 + t noise with t from the shifted uniform the sampler's schedule
   uses (shift 3), the model predicts noise - x0 (Wan's flow prediction), mean squared error.
   The control is replaced by zeros (the model's "no control") and the caption by the empty
   prompt, each for 10% of the items, so that the model also runs as plain text-to-video and
   takes guidance on either. The text encoder (a small umT5) learns with the transformer;
   the prompt embeddings are zero-padded to the shot's 512 tokens exactly as encode_prompts
   pads them. Exponential moving averages of both are kept; the denoising loss on the held-out
   clips (fixed noise and times) is logged beside the training loss, and at the end the last
   weights or the averages, whichever has the lower held-out loss, are exported.
The state is saved every 5 minutes and at the time limit (OUT/checkpoint.pt); the loss curves go
to OUT/transformer_loss.png.
"""
import argparse
import copy
import json
import os
from typing import Dict, List

import torch
from diffusers import WanTransformer3DModel
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

import common

DROP_CONTROL = DROP_TEXT = 0.1
EMA_DECAY = 0.999
HELDOUT_TIMES = (0.2, 0.5, 0.8, 0.95)


# ---- 1. tokenizer ------------------------------------------------------------------------------


def train_tokenizer(out: str, captions: List[str]) -> str:
    import sentencepiece

    folder = os.path.join(out, "tokenizer")
    model = os.path.join(folder, "spiece.model")
    if not os.path.exists(model):
        os.makedirs(folder, exist_ok=True)
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(captions), model_prefix=os.path.join(folder, "spiece"), vocab_size=256,
            hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            character_coverage=1.0, minloglevel=2, num_threads=1)
        os.remove(os.path.join(folder, "spiece.vocab"))
    return folder


# ---- 2. latents (training/encode_latents.py) ---------------------------------------------------


def load_latents(data: str, latents: str, split: str) -> List[Dict]:
    """Every clip's {"latents", "control", "caption"} as encode_latents.py wrote them."""
    items = []
    for folder in common.clip_folders(data, split):
        path = os.path.join(latents, split, os.path.basename(folder) + ".pt")
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: run training/encode_latents.py --data {data} --out {latents}")
        items.append(torch.load(path))
    return items


# ---- 3. training -------------------------------------------------------------------------------


def make_models(vocab_size: int):
    text = UMT5EncoderModel(UMT5Config(**dict(common.TEXT, vocab_size=vocab_size)))
    return WanTransformer3DModel(**common.TRANSFORMER), text


def embed(tokenizer, text_encoder, captions: List[str]) -> torch.Tensor:
    """Prompt embeddings as derrumbe's encode_prompts makes them: the encoder over the tokens
    (with their mask), the padded rows set to zero, [B, 512, d_model]."""
    tokens = tokenizer(captions, padding="max_length", max_length=common.MAX_SEQUENCE_LENGTH, truncation=True,
                       return_tensors="pt")
    length = int(tokens.attention_mask.sum(1).max())  # the rows past every prompt are zeros anyway
    hidden = text_encoder(tokens.input_ids[:, :length], attention_mask=tokens.attention_mask[:, :length])[0]
    hidden = hidden * tokens.attention_mask[:, :length, None]
    return torch.nn.functional.pad(hidden, (0, 0, 0, common.MAX_SEQUENCE_LENGTH - length))


def shifted(u: torch.Tensor, shift: float = common.FLOW_SHIFT) -> torch.Tensor:
    return shift * u / (1 + (shift - 1) * u)


def flow_loss(transformer, text_encoder, tokenizer, items, t: torch.Tensor, noise: torch.Tensor,
              drop_control: torch.Tensor, drop_text: torch.Tensor) -> torch.Tensor:
    x0 = torch.stack([i["latents"] for i in items])
    control = torch.stack([i["control"] for i in items]) * (~drop_control).float().view(-1, 1, 1, 1, 1)
    captions = ["" if d else i["caption"] for i, d in zip(items, drop_text.tolist())]
    tt = t.view(-1, 1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    prediction = transformer(torch.cat([x_t, control], 1), t * 1000, embed(tokenizer, text_encoder, captions),
                             return_dict=False)[0]
    return (prediction - (noise - x0)).pow(2).mean()


@torch.no_grad()
def heldout_loss(transformer, text_encoder, tokenizer, heldout: List[Dict]) -> float:
    """The denoising loss on the held-out clips at fixed times and noise (with control and caption)."""
    gen = torch.Generator().manual_seed(1234)
    total = 0.0
    for item in heldout:
        for t in HELDOUT_TIMES:
            noise = torch.randn((1,) + tuple(item["latents"].shape), generator=gen)
            total += flow_loss(transformer, text_encoder, tokenizer, [item], torch.tensor([t]), noise,
                               torch.tensor([False]), torch.tensor([False])).item()
    return total / (len(heldout) * len(HELDOUT_TIMES))


def update_ema(ema, model, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--latents", default="runs/latents", help="encode_latents.py's output folder")
    parser.add_argument("--out", default="runs/transformer")
    parser.add_argument("--heldout-every", type=int, default=250)
    args = common.run_arguments(parser, steps=1800, batch=4, lr=3e-4)
    clock = common.Clock(args.minutes * 60)

    train_folders = common.clip_folders(args.data, "train")
    if not train_folders:
        raise SystemExit(f"no training clips under {args.data}/train (run training/make_data.py)")
    captions = []
    for folder in train_folders:
        with open(os.path.join(folder, "clip.json")) as f:
            captions.append(json.load(f)["caption"])
    tokenizer = T5Tokenizer.from_pretrained(train_tokenizer(args.out, captions))
    train = load_latents(args.data, args.latents, "train")
    heldout = load_latents(args.data, args.latents, "heldout")
    print(f"{len(train)} training clips, {len(heldout)} held out; latents {tuple(train[0]['latents'].shape)}; "
          f"{clock.elapsed():.0f} s", flush=True)

    transformer, text_encoder = make_models(len(tokenizer))
    ema = [copy.deepcopy(transformer).eval(), copy.deepcopy(text_encoder).eval()]
    parameters = list(transformer.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 1)
    step, losses, seconds = 0, {"train": [], "held-out (EMA)": []}, 0.0  # seconds: of the earlier runs
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    state = common.load_checkpoint(checkpoint)
    if state is not None:
        transformer.load_state_dict(state["transformer"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema[0].load_state_dict(state["ema_transformer"])
        ema[1].load_state_dict(state["ema_text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["gen"])
        step, losses, seconds = state["step"], state["losses"], state["seconds"]
        print(f"resumed at step {step} after {seconds:.0f} s")
    else:
        losses["held-out (EMA)"].append(heldout_loss(*ema, tokenizer, heldout))

    def save():
        common.save_checkpoint(checkpoint, {
            "transformer": transformer.state_dict(), "text_encoder": text_encoder.state_dict(),
            "ema_transformer": ema[0].state_dict(), "ema_text_encoder": ema[1].state_dict(),
            "optimizer": optimizer.state_dict(), "gen": gen.get_state(), "step": step, "losses": losses,
            "seconds": seconds + clock.elapsed()})
        common.plot_losses(losses, os.path.join(args.out, "transformer_loss.png"),
                           "Transformer + text encoder (flow matching)",
                           every={"held-out (EMA)": args.heldout_every})

    transformer.train()
    text_encoder.train()
    stop = min(args.steps, args.stop_at or args.steps)
    while step < stop and not clock.out_of_time():
        for group in optimizer.param_groups:
            group["lr"] = common.cosine_lr(step, args.steps, args.lr)
        items = [train[int(i)] for i in torch.randint(len(train), (args.batch,), generator=gen)]
        t = shifted(torch.rand(args.batch, generator=gen))
        noise = torch.randn((args.batch,) + tuple(items[0]["latents"].shape), generator=gen)
        drop_control = torch.rand(args.batch, generator=gen) < DROP_CONTROL
        drop_text = torch.rand(args.batch, generator=gen) < DROP_TEXT
        loss = flow_loss(transformer, text_encoder, tokenizer, items, t, noise, drop_control, drop_text)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        update_ema(ema[0], transformer, EMA_DECAY)
        update_ema(ema[1], text_encoder, EMA_DECAY)
        step += 1
        losses["train"].append(loss.item())
        if step % args.heldout_every == 0:
            losses["held-out (EMA)"].append(heldout_loss(*ema, tokenizer, heldout))
            print(f"step {step}/{args.steps} train {sum(losses['train'][-50:]) / 50:.4f} "
                  f"held-out {losses['held-out (EMA)'][-1]:.4f} {clock.elapsed():.0f} s", flush=True)
        if clock.checkpoint_due():
            save()
    save()
    if common.stopped_early(step, args.steps):
        return
    # The average keeps EMA_DECAY ** steps of the initial weights (17% after 1800 steps), so it
    # can lose to the last weights: export whichever denoises the held-out clips better.
    transformer.eval()
    text_encoder.eval()
    candidates = {"last": (transformer, text_encoder), "EMA": tuple(ema)}
    scores = {name: heldout_loss(*models, tokenizer, heldout) for name, models in candidates.items()}
    best = min(scores, key=scores.get)
    candidates[best][0].save_pretrained(os.path.join(args.out, "transformer"), safe_serialization=True)
    candidates[best][1].save_pretrained(os.path.join(args.out, "text_encoder"), safe_serialization=True)
    print(f"held-out loss: last weights {scores['last']:.4f}, EMA {scores['EMA']:.4f}; exported the {best} weights")
    print(f"finished: {args.out}/transformer, text_encoder, tokenizer after {seconds + clock.elapsed():.0f} s in all")


if __name__ == "__main__":
    main()
