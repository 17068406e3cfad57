"""Text-encoder fixtures (issue 24 items 2 and 5): small random CLIPTextModelWithProjection folders in the layout
transformers saves (config.json with "architectures", model.safetensors or shards with their index), each with a
tokenizer folder and reference cases from tools/sd3/clip_text.py.

  tools/fixtures/clip-tiny/     CLIP-L style: quick_gelu, eos_token_id 2 (the legacy value released CLIP configs
                                carry: pooled at the argmax of the ids), F32, one model.safetensors; hidden 64,
                                4 heads, 3 layers, MLP 256, projection 32; tokenizer/ pads with <|endoftext|>
  tools/fixtures/clip-tiny-g/   bigG style: exact (erf) gelu, eos_token_id = the vocabulary's <|endoftext|> (pooled
                                at the first EOS), F16 weights in two shards + model.safetensors.index.json; hidden
                                80, 5 heads, 2 layers, MLP 160, projection 48; tokenizer/ pads with "!" (id 0), as
                                SD3's tokenizer_2
  Both use the 77-position layout and the vocabulary of tools/fixtures/tokenizers/clip (3,514 tokens; vocab_size in
  config.json is that size). Weights: CLIP's initialisation with every LayerNorm perturbed (weight 1 + N(0, 0.1²),
  bias N(0, 0.05²)) and biases N(0, 0.02²), so no parameter is an identity.

  cases.safetensors (beside config.json):
    ids         I64 [8, 77]  the tokenizer's padded ids of the 8 prompts in __metadata__["prompts"] (JSON)
    hidden      F32 [8, 77, D]  hidden_states[-2] (the penultimate layer's raw output, what SD3 uses)
    last        F32 [8, 77, D]  last_hidden_state (after final_layer_norm)
    text_embeds F32 [8, P]   text_projection(pooled): SD3's pooled prompt embedding
  computed in float32 by the reference from the weights as stored (F16 ones rounded), torch.set_num_threads(1).

  tools/fixtures/t5-tiny/       T5 v1.1 (T5EncoderModel, tools/sd3/t5_encoder.py): d_model 64, 3 heads of d_kv 16
                                (inner 48 ≠ d_model), d_ff 96, 3 blocks, 32 buckets, max_distance 128, vocab 4,128
                                (the 4,000 pieces of tools/fixtures/tokenizers/t5 + 100 extra ids, padded as T5's
                                32,128); BF16 weights in one model.safetensors (shared.weight, no tied copy);
                                tokenizer/ = that SentencePiece folder; norms perturbed like CLIP's
    cases.safetensors: ids I64 [4, 256] (sp.encode + </s>, cut at 255, padded with 0; prompts in the metadata),
    last_hidden_state F32 [4, 256, 64], buckets I64 [1201] = the bucket of rel = −600 … 600.

  OPENBLAS_CORETYPE=Haswell /usr/bin/python3 -m tools.text.make_encoder_fixtures
"""
import json
import os
import shutil

import torch

import sentencepiece as spm

from tools.sd3 import clip_bpe, clip_text, layout, t5_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tools", "fixtures")
VOCAB_DIR = os.path.join(FIXTURES, "tokenizers", "clip")

PROMPTS = [
    "a photograph of an astronaut riding a horse on the moon",
    "",
    "A RED cube, left of a blue sphere!!! it's 4k",
    "東京の夜景 🌃 café crème brûlée",
    "a " * 120,   # truncated at 77
    "<|endoftext|> in the middle <|endoftext|>",
    "neatousgu daight 1024x1024",
    "\t whitespace\n\nruns \u3000 and &amp; html <b>tags</b>",
]

CONFIGS = {
    "clip-tiny": dict(hidden_size=64, intermediate_size=256, projection_dim=32, num_hidden_layers=3,
                      num_attention_heads=4, hidden_act="quick_gelu", eos_token_id=2, seed=2401,
                      dtype="fp32", shard_bytes=None, pad=clip_bpe.EOS),
    "clip-tiny-g": dict(hidden_size=80, intermediate_size=160, projection_dim=48, num_hidden_layers=2,
                        num_attention_heads=5, hidden_act="gelu", eos_token_id=None, seed=2402,
                        dtype="fp16", shard_bytes=120_000, pad="!"),
}


def build(name, spec):
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    base = clip_bpe.CLIPTokenizer.from_dir(VOCAB_DIR)
    tok = clip_bpe.CLIPTokenizer(base.encoder, base.merges, 77, pad_token=spec["pad"])
    eos = spec["eos_token_id"] if spec["eos_token_id"] is not None else tok.eos_token_id
    config = {k: spec[k] for k in ("hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers",
                                   "num_attention_heads", "hidden_act")}
    config.update(vocab_size=len(tok.encoder), max_position_embeddings=77, eos_token_id=eos,
                  bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    model = clip_text.init_weights(clip_text.CLIPTextModelWithProjection(**config))
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=gen))
                mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=gen))
            elif isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                mod.bias.copy_(0.02 * torch.randn(mod.bias.shape, generator=gen))
    out = os.path.join(FIXTURES, name)
    if os.path.exists(out):
        shutil.rmtree(out)
    layout.write_clip(out, model, spec["dtype"], spec["shard_bytes"])
    tok.save(os.path.join(out, "tokenizer"))
    stored, _ = layout.read_clip(out)   # the weights as stored (F16 rounded)
    ids = torch.tensor([tok(p)[0] for p in PROMPTS], dtype=torch.int64)
    with torch.no_grad():
        res = stored(ids)
    cases = {"ids": ids, "hidden": res["penultimate"].float(), "last": res["last_hidden_state"].float(),
             "text_embeds": res["text_embeds"].float()}
    layout.write_safetensors(os.path.join(out, "cases.safetensors"), cases, "F32",
                             {"prompts": json.dumps(PROMPTS, ensure_ascii=False)})
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, {spec['dtype']}, "
          f"hidden {tuple(cases['hidden'].shape)}, text_embeds {tuple(cases['text_embeds'].shape)}")


T5_PROMPTS = [
    "a photograph of an astronaut riding a horse on the moon",
    "",
    "東京の夜景 🌃 café <sep> 1024x1024, ΟΔΟΣ",
    "a red cube left of a blue sphere. " * 40,   # cut at 255 tokens
]
T5_CONFIG = dict(vocab_size=4128, d_model=64, d_kv=16, d_ff=96, num_layers=3, num_heads=3,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6)
T5_LENGTH = 256


def t5_ids(sp, text, n=T5_LENGTH):
    ids = sp.encode(text)[:n - 1] + [sp.eos_id()]
    return ids + [sp.pad_id()] * (n - len(ids))


def build_t5(name="t5-tiny", seed=2403):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = t5_encoder.init_weights(t5_encoder.T5EncoderModel(**T5_CONFIG))
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, t5_encoder.T5LayerNorm):
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=gen))
    out = os.path.join(FIXTURES, name)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(model.config_json("bfloat16"), f, indent=2)
        f.write("\n")
    layout.write_weights(out, "model", model.state_dict(), "bf16")
    shutil.copytree(os.path.join(FIXTURES, "tokenizers", "t5"), os.path.join(out, "tokenizer"))
    stored = t5_encoder.T5EncoderModel(**T5_CONFIG)
    t5_encoder.load_weights(stored, layout.read_weights(out, "model")[0])
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer", "spiece.model"))
    ids = torch.tensor([t5_ids(sp, p) for p in T5_PROMPTS], dtype=torch.int64)
    with torch.no_grad():
        last = stored(ids)["last_hidden_state"]
    rel = torch.arange(-600, 601)
    buckets = t5_encoder.relative_buckets(rel, T5_CONFIG["relative_attention_num_buckets"],
                                          T5_CONFIG["relative_attention_max_distance"])
    layout.write_safetensors(os.path.join(out, "cases.safetensors"),
                             {"ids": ids, "last_hidden_state": last.float(), "buckets": buckets}, "F32",
                             {"prompts": json.dumps(T5_PROMPTS, ensure_ascii=False)})
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, bf16, "
          f"last_hidden_state {tuple(last.shape)}")


def main():
    torch.set_num_threads(1)
    for name, spec in CONFIGS.items():
        build(name, spec)
    build_t5()


if __name__ == "__main__":
    main()
