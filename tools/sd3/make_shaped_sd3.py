#!/usr/bin/env python3
"""Writes random-weight SD3 components at real shapes (SD3-medium's transformer, CLIP-L, CLIP-G, T5-XXL) in
diffusers' released folder layout, for measuring load time, memory and speed (tools/bench_sd3_shapes.sh, issue 24).

Unlike tools/sd3/make_random_sd3.py, which builds torch modules and runs them for reference outputs, this writes
each tensor straight to its safetensors file as it is drawn: the full-size pipeline is 7.8 G parameters (15.6 GB in
BF16), which as torch float32 modules (31 GB) would not fit the machines it is measured on. Nothing here computes a
reference; the values are N(0, 1/fan_in) weights (1 + N(0, 0.1²) for norm weights, N(0, 0.02²) biases and tables),
seeded, so activations keep a sane scale through the layers.

Tensor names and shapes follow what the loaders validate (backends/api/.../MmditCheckpoint.java expectedShapes,
backends/java/.../ClipTextEncoder.java and T5TextEncoder.java expectedShapes), with the configs diffusers and
transformers ship for stabilityai/stable-diffusion-3-medium-diffusers. T5 is written in two shards with
model.safetensors.index.json, as released; the others as one file each. No tokenizers, VAE or scheduler: the
benchmark feeds token ids and latents directly.

  /usr/bin/python3 tools/sd3/make_shaped_sd3.py --out /tmp/w/sd3-medium                # full size, BF16
  /usr/bin/python3 tools/sd3/make_shaped_sd3.py --out /tmp/w/sd3-small --size small    # the same code, seconds
  /usr/bin/python3 tools/sd3/make_shaped_sd3.py --out /tmp/w/sd3-mid --size mid        # 0.68 GB, seconds
"""
import argparse
import json
import os
import struct

import numpy as np

SIZES = {
    # stabilityai/stable-diffusion-3-medium-diffusers
    "medium": dict(
        transformer=dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                         num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                         pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192),
        clip_l=dict(vocab=49408, hidden=768, layers=12, heads=12, ff=3072, proj=768, act="quick_gelu"),
        clip_g=dict(vocab=49408, hidden=1280, layers=32, heads=20, ff=5120, proj=1280, act="gelu"),
        t5=dict(vocab=32128, d_model=4096, d_kv=64, heads=64, d_ff=10240, layers=24, shards=2)),
    # between the two: 0.34 G parameters, 0.68 GB of BF16, big enough that load times are seconds and small enough
    # to write in seconds (tools/bench_graph_cache.sh)
    "mid": dict(
        transformer=dict(sample_size=64, patch_size=2, in_channels=16, num_layers=8, attention_head_dim=64,
                         num_attention_heads=12, joint_attention_dim=1024, caption_projection_dim=768,
                         pooled_projection_dim=768, out_channels=16, pos_embed_max_size=96),
        clip_l=dict(vocab=49408, hidden=256, layers=4, heads=4, ff=1024, proj=256, act="quick_gelu"),
        clip_g=dict(vocab=49408, hidden=256, layers=4, heads=4, ff=1024, proj=256, act="gelu"),
        t5=dict(vocab=32128, d_model=1024, d_kv=64, heads=16, d_ff=2816, layers=8, shards=2)),
    # the same structure, small enough to write and load in seconds (for developing the benchmark)
    "small": dict(
        transformer=dict(sample_size=32, patch_size=2, in_channels=16, num_layers=3, attention_head_dim=32,
                         num_attention_heads=4, joint_attention_dim=256, caption_projection_dim=128,
                         pooled_projection_dim=192, out_channels=16, pos_embed_max_size=40),
        clip_l=dict(vocab=49408, hidden=64, layers=2, heads=2, ff=128, proj=64, act="quick_gelu"),
        clip_g=dict(vocab=49408, hidden=128, layers=2, heads=4, ff=256, proj=128, act="gelu"),
        t5=dict(vocab=32128, d_model=256, d_kv=32, heads=8, d_ff=512, layers=2, shards=2)),
}

ST_DTYPE = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}


def mmdit_shapes(c):
    """name → (shape, kind) as MmditCheckpoint.expectedShapes (no dual attention, no qk-norm: SD3-medium)."""
    d = c["num_attention_heads"] * c["attention_head_dim"]
    p, m = c["patch_size"], {}

    def linear(prefix, out, inp):
        m[prefix + ".weight"] = ((out, inp), "weight")
        m[prefix + ".bias"] = ((out,), "bias")

    m["pos_embed.proj.weight"] = ((d, c["in_channels"], p, p), "weight")
    m["pos_embed.proj.bias"] = ((d,), "bias")
    m["pos_embed.pos_embed"] = ((1, c["pos_embed_max_size"] ** 2, d), "table")
    linear("time_text_embed.timestep_embedder.linear_1", d, 256)
    linear("time_text_embed.timestep_embedder.linear_2", d, d)
    linear("time_text_embed.text_embedder.linear_1", d, c["pooled_projection_dim"])
    linear("time_text_embed.text_embedder.linear_2", d, d)
    linear("context_embedder", d, c["joint_attention_dim"])
    for i in range(c["num_layers"]):
        b = f"transformer_blocks.{i}."
        last = i == c["num_layers"] - 1
        linear(b + "norm1.linear", 6 * d, d)
        linear(b + "norm1_context.linear", (2 if last else 6) * d, d)
        for proj in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj"):
            linear(b + "attn." + proj, d, d)
        if not last:
            linear(b + "attn.to_add_out", d, d)
        for ff in ("ff.",) + (() if last else ("ff_context.",)):
            linear(b + ff + "net.0.proj", 4 * d, d)
            linear(b + ff + "net.2", d, 4 * d)
    linear("norm_out.linear", 2 * d, d)
    linear("proj_out", p * p * c["out_channels"], d)
    return m


def clip_shapes(c):
    """As ClipTextEncoder.expectedShapes, plus the position table (77 rows)."""
    d, f, m = c["hidden"], c["ff"], {}
    m["text_model.embeddings.token_embedding.weight"] = ((c["vocab"], d), "table")
    m["text_model.embeddings.position_embedding.weight"] = ((77, d), "table")
    for i in range(c["layers"]):
        p = f"text_model.encoder.layers.{i}."
        for a in ("q_proj", "k_proj", "v_proj", "out_proj"):
            m[p + "self_attn." + a + ".weight"] = ((d, d), "weight")
            m[p + "self_attn." + a + ".bias"] = ((d,), "bias")
        for ln in ("layer_norm1", "layer_norm2"):
            m[p + ln + ".weight"] = ((d,), "norm")
            m[p + ln + ".bias"] = ((d,), "bias")
        m[p + "mlp.fc1.weight"] = ((f, d), "weight")
        m[p + "mlp.fc1.bias"] = ((f,), "bias")
        m[p + "mlp.fc2.weight"] = ((d, f), "weight")
        m[p + "mlp.fc2.bias"] = ((d,), "bias")
    m["text_model.final_layer_norm.weight"] = ((d,), "norm")
    m["text_model.final_layer_norm.bias"] = ((d,), "bias")
    m["text_projection.weight"] = ((c["proj"], d), "weight")
    return m


def t5_shapes(c):
    """As T5TextEncoder.expectedShapes, plus shared.weight (the token embedding)."""
    d, inner, f, m = c["d_model"], c["heads"] * c["d_kv"], c["d_ff"], {}
    m["shared.weight"] = ((c["vocab"], d), "table")
    for i in range(c["layers"]):
        a = f"encoder.block.{i}.layer.0."
        for p in ("q", "k", "v"):
            m[a + f"SelfAttention.{p}.weight"] = ((inner, d), "weight")
        m[a + "SelfAttention.o.weight"] = ((d, inner), "weight")
        if i == 0:
            m[a + "SelfAttention.relative_attention_bias.weight"] = ((32, c["heads"]), "table")
        m[a + "layer_norm.weight"] = ((d,), "norm")
        f_ = f"encoder.block.{i}.layer.1."
        m[f_ + "DenseReluDense.wi_0.weight"] = ((f, d), "weight")
        m[f_ + "DenseReluDense.wi_1.weight"] = ((f, d), "weight")
        m[f_ + "DenseReluDense.wo.weight"] = ((d, f), "weight")
        m[f_ + "layer_norm.weight"] = ((d,), "norm")
    m["encoder.final_layer_norm.weight"] = ((d,), "norm")
    return m


def draw(rng, shape, kind, st_dtype):
    """Random values of one tensor as the stored bytes."""
    n = int(np.prod(shape))
    if kind == "weight":
        fan_in = int(np.prod(shape[1:]))
        a = rng.standard_normal(n, dtype=np.float32) * np.float32(fan_in ** -0.5)
    elif kind == "norm":
        a = 1 + 0.1 * rng.standard_normal(n, dtype=np.float32)
    else:
        a = 0.02 * rng.standard_normal(n, dtype=np.float32)
    if st_dtype == "BF16":
        return (a.view(np.uint32) >> 16).astype("<u2").tobytes()  # truncation: any bf16 value will do
    return a.astype("<f2" if st_dtype == "F16" else "<f4").tobytes()


def write_file(path, rng, shapes, st_dtype):
    """One safetensors file of `shapes` (name → (shape, kind)), written tensor by tensor; returns its data bytes."""
    size = 2 if st_dtype in ("BF16", "F16") else 4
    header, offset = {}, 0
    for name in sorted(shapes):
        shape, _ = shapes[name]
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name in sorted(shapes):
            f.write(draw(rng, *shapes[name], st_dtype))
    os.replace(path + ".tmp", path)
    return offset


def write_component(folder, base, shapes, st_dtype, rng, shards=1):
    """diffusers/transformers weights: BASE.safetensors, or N shards with BASE.safetensors.index.json."""
    os.makedirs(folder, exist_ok=True)
    if shards <= 1:
        return write_file(os.path.join(folder, base + ".safetensors"), rng, shapes, st_dtype)
    names = sorted(shapes)
    size = 2 if st_dtype in ("BF16", "F16") else 4
    total = sum(int(np.prod(shapes[n][0])) * size for n in names)
    groups, cur, acc = [], [], 0
    for n in names:  # cut into shards of about total / shards bytes, in name order
        cur.append(n)
        acc += int(np.prod(shapes[n][0])) * size
        if acc >= total * (len(groups) + 1) / shards and len(groups) < shards - 1:
            groups.append(cur)
            cur = []
    groups.append(cur)
    weight_map = {}
    for i, g in enumerate(groups):
        file = f"{base}-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        write_file(os.path.join(folder, file), rng, {n: shapes[n] for n in g}, st_dtype)
        weight_map.update({n: file for n in g})
    with open(os.path.join(folder, base + ".safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return total


def configs(s, dtype):
    torch_dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype]
    t = dict(_class_name="SD3Transformer2DModel", _diffusers_version="0.29.0", dual_attention_layers=[],
             qk_norm=None, **s["transformer"])

    def clip(c, eos):
        return dict(architectures=["CLIPTextModelWithProjection"], model_type="clip_text_model",
                    vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["ff"],
                    projection_dim=c["proj"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                    max_position_embeddings=77, hidden_act=c["act"], layer_norm_eps=1e-5, pad_token_id=1,
                    bos_token_id=0, eos_token_id=eos, attention_dropout=0.0, dropout=0.0, initializer_factor=1.0,
                    initializer_range=0.02, torch_dtype=torch_dtype, transformers_version="4.41.2")
    c5 = s["t5"]
    t5 = dict(architectures=["T5EncoderModel"], model_type="t5", d_model=c5["d_model"], d_kv=c5["d_kv"],
              d_ff=c5["d_ff"], num_heads=c5["heads"], num_layers=c5["layers"], num_decoder_layers=c5["layers"],
              vocab_size=c5["vocab"], feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
              layer_norm_epsilon=1e-6, relative_attention_num_buckets=32, relative_attention_max_distance=128,
              tie_word_embeddings=False, is_encoder_decoder=True, pad_token_id=0, eos_token_id=1,
              decoder_start_token_id=0, dropout_rate=0.1, classifier_dropout=0.0, initializer_factor=1.0,
              output_past=True, use_cache=True, torch_dtype=torch_dtype, transformers_version="4.41.2")
    return t, clip(s["clip_l"], 2), clip(s["clip_g"], 49407), t5


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", choices=sorted(SIZES), default="medium")
    ap.add_argument("--dtype", choices=sorted(ST_DTYPE), default="bf16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    s = SIZES[args.size]
    st = ST_DTYPE[args.dtype]
    rng = np.random.default_rng(args.seed)
    t, cl, cg, t5 = configs(s, args.dtype)
    parts = [("transformer", "diffusion_pytorch_model", mmdit_shapes(s["transformer"]), t, 1),
             ("text_encoder", "model", clip_shapes(s["clip_l"]), cl, 1),
             ("text_encoder_2", "model", clip_shapes(s["clip_g"]), cg, 1),
             ("text_encoder_3", "model", t5_shapes(s["t5"]), t5, s["t5"]["shards"])]
    os.makedirs(args.out, exist_ok=True)
    index = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.29.0"}
    for name, base, shapes, config, shards in parts:
        folder = os.path.join(args.out, name)
        nbytes = write_component(folder, base, shapes, st, rng, shards)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        params = sum(int(np.prod(v[0])) for v in shapes.values())
        print(f"{name}: {params / 1e6:.1f} M parameters, {nbytes / 1e9:.3f} GB of {st}", flush=True)
        index[name] = (["diffusers", "SD3Transformer2DModel"] if name == "transformer" else
                       ["transformers", config["architectures"][0]])
    with open(os.path.join(args.out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)


if __name__ == "__main__":
    main()
