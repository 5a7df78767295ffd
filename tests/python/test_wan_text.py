"""Parity of derrumbe's Wan text side with transformers and diffusers.

Everything expected is computed at test time by the reference libraries:
- the encoder against transformers' UMT5EncoderModel: tiny configs initialized with
  torch.manual_seed, every parameter (layer-norm weights and relative-bias tables included)
  perturbed so each one matters, saved with save_pretrained, loaded by derrumbe, both run on
  the CPU in float32;
- the tokenizer against transformers' T5Tokenizer on SentencePiece unigram models trained
  here with the sentencepiece package, with T5's special ids (pad 0, eos 1, unk 2, no bos);
- encode_prompts against diffusers' WanPipeline recipe (_get_t5_prompt_embeds) written out
  with the reference tokenizer and encoder.
"""
import random

import pytest
import torch

import derrumbe

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")
safetensors_torch = pytest.importorskip("safetensors.torch")
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel  # noqa: E402

TOL = 1e-4

TINY = dict(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu")
LARGER = dict(TINY, num_layers=3, d_model=48, num_heads=6, d_kv=8, d_ff=96)
# few buckets and a short max distance: a 20-token prompt reaches the clamped last bucket
SHORT_RANGE = dict(TINY, relative_attention_num_buckets=12, relative_attention_max_distance=9)


def max_abs(a, b):
    return (a.float() - b.float()).abs().max().item()


def make_encoder(config, seed=0):
    torch.manual_seed(seed)
    model = UMT5EncoderModel(UMT5Config(**config)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():  # the tied embedding once
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def save(model, directory):
    model.save_pretrained(str(directory), safe_serialization=True)
    return str(directory)


def random_inputs(vocab, batch=2, length=20, seed=3):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[1, length * 2 // 3:] = 0  # the second row is padded
        ids[1, length * 2 // 3:] = 0
    return ids, mask


def reference(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


# ---- encoder -------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["tiny", "larger", "short_range"])
def encoder_pair(request, tmp_path_factory):
    config = {"tiny": TINY, "larger": LARGER, "short_range": SHORT_RANGE}[request.param]
    model = make_encoder(config)
    directory = save(model, tmp_path_factory.mktemp("umt5_" + request.param))
    return request.param, config, model, derrumbe.UMT5Encoder.load(directory)


def test_encoder_matches_transformers(encoder_pair):
    name, config, model, ours = encoder_pair
    ids, mask = random_inputs(config["vocab_size"])
    expected = reference(model, ids, mask)
    got = ours(ids, mask)
    assert got.shape == expected.shape == (2, 20, config["d_model"]) and got.dtype == torch.float32
    assert expected.abs().max() > 0.1  # a real signal
    diff = max_abs(got, expected)
    print(f"umt5 {name}: max abs diff {diff:.3g}")
    assert diff < TOL
    # the mask matters: without it the second row changes
    assert max_abs(ours(ids, None)[1], expected[1]) > 1e-3


def test_encoder_without_mask_and_long_sequence(encoder_pair):
    name, config, model, ours = encoder_pair
    # 300 tokens: distances far beyond max_distance (the clamped logarithmic buckets)
    ids, _ = random_inputs(config["vocab_size"], batch=1, length=300, seed=5)
    expected = reference(model, ids, None)
    diff = max_abs(ours(ids), expected)
    print(f"umt5 {name} (L=300, no mask): max abs diff {diff:.3g}")
    assert diff < TOL


def test_encoder_int32_ids_and_bool_mask(encoder_pair):
    _, config, model, ours = encoder_pair
    ids, mask = random_inputs(config["vocab_size"])
    expected = reference(model, ids, mask)
    assert max_abs(ours(ids.int(), mask.bool()), expected) < TOL


def test_encoder_parameters_and_config(encoder_pair):
    _, config, model, ours = encoder_pair
    params = ours.parameters()
    state = model.state_dict()
    assert set(params) == set(state) - {"encoder.embed_tokens.weight"}
    for k, v in params.items():
        assert torch.equal(v, state[k]), k
    for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                "relative_attention_num_buckets", "relative_attention_max_distance", "feed_forward_proj"):
        assert ours.config[key] == config[key], key


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_encoder_half_precision(tmp_path, dtype):
    """Half loads as transformers' from_pretrained does (wo kept float32 in float16 only)."""
    directory = save(make_encoder(TINY), tmp_path / "enc")
    model = UMT5EncoderModel.from_pretrained(directory, dtype=dtype).eval()
    ours = derrumbe.UMT5Encoder.load(directory, dtype=dtype)
    wo = "encoder.block.0.layer.1.DenseReluDense.wo.weight"
    assert ours.parameters()[wo].dtype == model.state_dict()[wo].dtype
    ids, mask = random_inputs(TINY["vocab_size"])
    expected = reference(model, ids, mask)
    got = ours(ids, mask)
    assert got.dtype == expected.dtype == dtype
    diff = max_abs(got, expected)
    scale = expected.float().abs().max().item()
    print(f"umt5 {dtype}: max abs diff {diff:.3g} (output scale {scale:.3g})")
    assert diff < 2e-2 * scale


# ---- tokenizer -----------------------------------------------------------------------------------

SYLLABLES = ("ba be bi bo bu ka ke ki ko ku ta te ti to tu ra re ri ro ru sa se si so su na ne ni no nu "
             "str pl gr th sh ch").split()
WORDS = ("the a building collapses slowly into dust debris camera pans left right cinematic shot of tower "
         "concrete glass breaks explosion smoke sunset city street night rain slow motion wide angle close "
         "up falling bricks steel beams").split()


def training_lines(n=400, seed=0):
    rng = random.Random(seed)
    words = WORDS + ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(400)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) + rng.choice([".", ",", "!", "?", ""])
             for _ in range(n)]
    # a little punctuation, digits and non-Latin text, so some of it is in the vocabulary
    lines += ["Café naïve résumé — 東京 タワー", "Hello, World! 123 456", "x=y+z; (a) [b] {c}"] * 3
    return lines


def train_spm(directory, vocab_size=300, **options):
    directory.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(training_lines()), model_prefix=str(directory / "spiece"),
                                   vocab_size=vocab_size, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, character_coverage=1.0, minloglevel=2, **options)
    return directory


@pytest.fixture(scope="module", params=["plain", "byte_fallback"])
def tokenizers(request, tmp_path_factory):
    # byte fallback needs the 256 byte pieces in the vocabulary too
    options = dict(byte_fallback=True, vocab_size=420) if request.param == "byte_fallback" else {}
    directory = train_spm(tmp_path_factory.mktemp("spm_" + request.param), **options)
    # transformers 5.x: T5Tokenizer is backed by `tokenizers` and converts the SentencePiece model
    # in from_pretrained (T5Tokenizer(vocab_file=...) would silently build a placeholder vocabulary).
    reference_tok = T5Tokenizer.from_pretrained(str(directory))
    assert reference_tok.convert_tokens_to_ids("</s>") == 1 and reference_tok.pad_token_id == 0
    return reference_tok, derrumbe.Tokenizer.load(str(directory / "spiece.model")), directory


PROMPTS = [
    "the building collapses into dust",
    "  leading and trailing spaces  ",
    "multiple    spaces   between\twords\nand lines",
    "Hello, World! (a) [b] {c}; x=y+z?",
    "Café naïve résumé — 東京 タワー ☃ zebra",
    "e\u0301 combining, ﬁ ligature, ① circled, full\u3000width and no\u00a0break",
    "unknownQQQword XYZ",
    "",
    " ",
    "x </s> y<pad>z <unk>",
    "▁already ▁escaped",
    "a slow cinematic shot of a concrete tower falling into the street at sunset, debris and smoke " * 3,
]


def test_tokenizer_encode_matches_transformers(tokenizers):
    reference_tok, ours, directory = tokenizers
    assert ours.vocab_size == spm.SentencePieceProcessor(model_file=str(directory / "spiece.model")).vocab_size()
    mismatches = []
    for p in PROMPTS:
        expected = reference_tok(p, add_special_tokens=True)["input_ids"]
        got = ours.encode(p)
        if got != expected:
            mismatches.append((p, expected, got))
    assert not mismatches, mismatches


@pytest.mark.parametrize("max_length", [1, 5, 16, 64])
def test_tokenizer_batch_matches_transformers(tokenizers, max_length):
    reference_tok, ours, _ = tokenizers
    expected = reference_tok(PROMPTS, padding="max_length", max_length=max_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = ours.batch(PROMPTS, max_length)
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (len(PROMPTS), max_length)
    assert torch.equal(ids, expected["input_ids"])
    assert torch.equal(mask, expected["attention_mask"])
    # the long prompt is truncated with EOS kept last
    assert ids[-1, -1].item() == 1 and mask[-1].all()


def test_tokenizer_loads_from_directory(tokenizers):
    _, ours, directory = tokenizers
    assert derrumbe.Tokenizer.load(str(directory)).encode(PROMPTS[0]) == ours.encode(PROMPTS[0])


# ---- encode_prompts ------------------------------------------------------------------------------

def test_encode_prompts_matches_wan_pipeline(tmp_path):
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    reference_tok = T5Tokenizer.from_pretrained(str(train_spm(tmp_path / "tok")))
    model = make_encoder(TINY)
    directory = save(model, tmp_path / "enc")
    prompts = ["the building collapses", "  a slow\t\tcinematic shot\n of dust  ", "",
               "full\u3000width\u00a0and\u2003em spaces\u2029", PROMPTS[-1]]
    max_length = 16

    # diffusers' WanPipeline._get_t5_prompt_embeds, step by step
    cleaned = [prompt_clean(p) for p in prompts]
    inputs = reference_tok(cleaned, padding="max_length", max_length=max_length, truncation=True,
                           add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = inputs.input_ids, inputs.attention_mask
    seq_lens = mask.gt(0).sum(dim=1).long()
    with torch.no_grad():
        hidden = model(ids, mask).last_hidden_state
    hidden = [u[:v] for u, v in zip(hidden, seq_lens)]
    expected = torch.stack([torch.cat([u, u.new_zeros(max_length - u.size(0), u.size(1))]) for u in hidden], dim=0)

    got = derrumbe.encode_prompts(derrumbe.Tokenizer.load(str(tmp_path / "tok")), derrumbe.UMT5Encoder.load(directory),
                                  prompts, max_length=max_length)
    assert got.shape == expected.shape == (len(prompts), max_length, TINY["d_model"]) and got.dtype == torch.float32
    diff = max_abs(got, expected)
    print(f"encode_prompts: max abs diff {diff:.3g}")
    assert diff < TOL
    assert (got[0, seq_lens[0]:] == 0).all() and got[0, : seq_lens[0]].abs().max() > 0.1


# ---- bad input -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save(make_encoder(TINY), tmp_path_factory.mktemp("umt5_bad"))


def test_ids_out_of_range(tiny_dir):
    ours = derrumbe.UMT5Encoder.load(tiny_dir)
    ids, mask = random_inputs(TINY["vocab_size"])
    ids[1, 4] = 300
    with pytest.raises(ValueError, match=r"input_ids\[1, 4\] = 300"):
        ours(ids, mask)
    ids[1, 4] = -1
    with pytest.raises(ValueError, match="= -1"):
        ours(ids, mask)


def test_bad_ids_dtype_and_shapes(tiny_dir):
    ours = derrumbe.UMT5Encoder.load(tiny_dir)
    ids, mask = random_inputs(TINY["vocab_size"])
    with pytest.raises(ValueError, match="integer"):
        ours(ids.float(), mask)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        ours(ids[0], None)
    with pytest.raises(ValueError, match="attention_mask"):
        ours(ids, mask[:, :5])


def test_missing_and_unexpected_keys(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_dir + "/model.safetensors")
    config = open(tiny_dir + "/config.json").read()
    missing = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"
    for name, tensors in [("missing", {k: v for k, v in state.items() if k != missing}),
                          ("extra", dict(state, **{"encoder.block.2.layer.0.layer_norm.weight": torch.ones(32)}))]:
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(config)
        save_file(tensors, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=missing.replace(".", r"\.")):
        derrumbe.UMT5Encoder.load(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"unexpected.*encoder\.block\.2\.layer\.0\.layer_norm\.weight"):
        derrumbe.UMT5Encoder.load(str(tmp_path / "extra"))
    with pytest.raises(FileNotFoundError):
        derrumbe.UMT5Encoder.load(str(tmp_path / "nowhere"))


def test_tied_embedding_names(tiny_dir, tmp_path):
    """Older exports store the tied embedding as encoder.embed_tokens.weight, alone or beside
    shared.weight; both load, and a full encoder-decoder checkpoint's decoder keys are skipped."""
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_dir + "/model.safetensors")
    config = open(tiny_dir + "/config.json").read()
    embed = state["shared.weight"]
    rest = {k: v for k, v in state.items() if k != "shared.weight"}
    variants = {"embed_only": dict(rest, **{"encoder.embed_tokens.weight": embed}),
                "both": dict(state, **{"encoder.embed_tokens.weight": embed.clone()}),
                "with_decoder": dict(state, **{"decoder.final_layer_norm.weight": torch.ones(32),
                                               "lm_head.weight": torch.zeros(300, 32)})}
    ids, mask = random_inputs(TINY["vocab_size"])
    expected = derrumbe.UMT5Encoder.load(tiny_dir)(ids, mask)
    for name, tensors in variants.items():
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(config)
        save_file(tensors, str(d / "model.safetensors"))
        assert torch.equal(derrumbe.UMT5Encoder.load(str(d))(ids, mask), expected), name


def test_tokenizer_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.model"):
        derrumbe.Tokenizer.load(str(tmp_path / "nowhere.model"))
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        derrumbe.Tokenizer.load(str(tmp_path))  # a directory without a model
    not_a_model = tmp_path / "config.json"
    not_a_model.write_text('{"this": "is not a SentencePiece model"}')
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        derrumbe.Tokenizer.load(str(not_a_model))
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    with pytest.raises(ValueError):
        derrumbe.Tokenizer.load(str(garbage))
