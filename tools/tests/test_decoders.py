"""Tests of the image decoders (tools/dit/vae.py): key layouts, scaling, loaders, converters, ONNX export, fixtures.

  /usr/bin/python3 -m unittest discover -s tools/tests -v
"""
import json
import os
import sys
import tempfile
import unittest

import numpy as np
import torch

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOOLS)
import convert  # noqa: E402
import decode_reference  # noqa: E402
import make_decoder_fixtures as mdf  # noqa: E402
from dit import safetensors_io, vae  # noqa: E402

FIXTURES = os.path.join(TOOLS, "fixtures")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def kl_layout(block_out, layers_per_block, latent, out, attention=True, post_quant=True):
    """The AutoencoderKL decode path's key names and shapes, written down from docs/DECODERS.md."""
    keys = {}

    def conv(name, cin, cout, k=3):
        keys[name + ".weight"] = (cout, cin, k, k)
        keys[name + ".bias"] = (cout,)

    def norm(name, c):
        keys[name + ".weight"] = (c,)
        keys[name + ".bias"] = (c,)

    def resnet(name, cin, cout):
        norm(name + ".norm1", cin)
        conv(name + ".conv1", cin, cout)
        norm(name + ".norm2", cout)
        conv(name + ".conv2", cout, cout)
        if cin != cout:
            conv(name + ".conv_shortcut", cin, cout, 1)

    if post_quant:
        conv("post_quant_conv", latent, latent, 1)
    top = block_out[-1]
    conv("decoder.conv_in", latent, top)
    resnet("decoder.mid_block.resnets.0", top, top)
    resnet("decoder.mid_block.resnets.1", top, top)
    if attention:
        a = "decoder.mid_block.attentions.0."
        norm(a + "group_norm", top)
        for p in ("to_q", "to_k", "to_v", "to_out.0"):
            keys[a + p + ".weight"] = (top, top)
            keys[a + p + ".bias"] = (top,)
    prev = top
    for i, c in enumerate(reversed(block_out)):
        for j in range(layers_per_block + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", prev if j == 0 else c, c)
        if i < len(block_out) - 1:
            conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", c, c)
        prev = c
    norm("decoder.conv_norm_out", block_out[0])
    conv("decoder.conv_out", block_out[0], out)
    return keys


def taesd_layout(c=64, latent=4, out=3):
    """TAESD's decoder.layers.K for num_decoder_blocks [3, 3, 3, 1], as docs/DECODERS.md numbers them."""
    keys = {"decoder.layers.0.weight": (c, latent, 3, 3), "decoder.layers.0.bias": (c,),
            "decoder.layers.18.weight": (out, c, 3, 3), "decoder.layers.18.bias": (out,)}
    for k in (2, 3, 4, 7, 8, 9, 12, 13, 14, 17):
        for j in (0, 2, 4):
            keys[f"decoder.layers.{k}.conv.{j}.weight"] = (c, c, 3, 3)
            keys[f"decoder.layers.{k}.conv.{j}.bias"] = (c,)
    for k in (6, 11, 16):
        keys[f"decoder.layers.{k}.weight"] = (c, c, 3, 3)  # no bias
    return keys


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def small_vae(seed=1, **over):
    cfg = dict(mdf.VAE_SMALL, **over)
    return mdf.randomize(vae.FullDecoder(cfg), seed), cfg


def to_ldm(sd, num_up, prefix="first_stage_model."):
    """diffusers decode-path keys → the original LDM autoencoder keys (the inverse of the converter, written
    separately): attention projections become 1×1 convolutions, up blocks are numbered by resolution."""
    out = {}
    for k, v in sd.items():
        n = k.replace("decoder.conv_norm_out.", "decoder.norm_out.")
        n = n.replace("decoder.mid_block.resnets.0.", "decoder.mid.block_1.")
        n = n.replace("decoder.mid_block.resnets.1.", "decoder.mid.block_2.")
        n = n.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".attentions.0." in n:
            part = n.split(".")[-2] if not n.endswith(("to_out.0.weight", "to_out.0.bias")) else "to_out.0"
            ldm = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}[part]
            n = f"decoder.mid.attn_1.{ldm}.{n.split('.')[-1]}"
            if n.endswith(".weight") and ldm != "norm":
                v = v[:, :, None, None]
        if n.startswith("decoder.up_blocks."):
            parts = n.split(".")
            i = num_up - 1 - int(parts[2])
            if parts[3] == "resnets":
                n = ".".join(["decoder.up", str(i), "block", parts[4]] + parts[5:])
            else:  # upsamplers.0.conv.X
                n = ".".join(["decoder.up", str(i), "upsample"] + parts[5:])
        out[prefix + n] = v.clone()
    return out


class ArchitectureTest(unittest.TestCase):
    def test_sd_vae_ft_ema_layout_and_parameter_count(self):
        m = vae.FullDecoder(vae.SD_VAE_FT_EMA_CONFIG)
        self.assertEqual(shapes(m), kl_layout([128, 256, 512, 512], 2, 4, 3))
        # the published 49,490,179 is the decoder.* tensors alone; post_quant_conv adds 4·4 + 4 = 20
        self.assertEqual(vae.parameter_count(m.decoder), 49_490_179)
        self.assertEqual(vae.parameter_count(m.post_quant_conv), 20)
        self.assertEqual(m.scale_factor, 8)

    def test_taesd_index_layout(self):
        m = vae.TinyDecoder(vae.TAESD_CONFIG)
        self.assertEqual(shapes(m), taesd_layout())
        self.assertEqual(vae.parameter_count(m), 1_222_531)
        stage = ["block"] * 3 + ["upsample", "conv_nobias"]
        self.assertEqual(vae.tiny_layer_kinds([3, 3, 3, 1]), ["conv", "relu"] + stage * 3 + ["block", "conv"])
        self.assertEqual(m.scale_factor, 8)

    def test_optional_parts_follow_the_config(self):
        m = vae.FullDecoder(dict(mdf.VAE_SMALL, use_post_quant_conv=False, mid_block_add_attention=False))
        self.assertEqual(shapes(m), kl_layout([16, 32], 1, 4, 3, attention=False, post_quant=False))

    def test_scale_factors_and_output_shapes(self):
        cases = [(mdf.VAE_SMALL, 2, (2, 4, 6, 5)), (mdf.TAESD_SMALL, 8, (2, 4, 4, 3)),
                 (dict(mdf.VAE_SMALL, block_out_channels=[16, 16, 32]), 4, (1, 4, 3, 2)),
                 (vae.TAESD_CONFIG, 8, (1, 4, 2, 3))]
        for cfg, f, shape in cases:
            m = vae.decoder_from_config(cfg).eval()
            self.assertEqual(m.scale_factor, f)
            with torch.no_grad():
                y = m(torch.randn(shape))
            self.assertEqual(tuple(y.shape), (shape[0], 3, f * shape[2], f * shape[3]))

    def test_full_decoder_scales_then_shifts_inside(self):
        m, _ = small_vae(2, scaling_factor=1.5305, shift_factor=0.0609)
        x = torch.randn(1, 4, 3, 4)
        with torch.no_grad():
            want = m.decoder(m.post_quant_conv(x / 1.5305 + 0.0609))
            torch.testing.assert_close(m(x), want, rtol=0, atol=0)

    def test_tiny_decoder_clamps_and_maps_to_minus_one_one(self):
        m = mdf.randomize(vae.TinyDecoder(mdf.TAESD_SMALL), 3)
        x = 4 * torch.randn(1, 4, 3, 2)
        with torch.no_grad():
            want = m.decoder.layers(torch.tanh(x / 3) * 3) * 2 - 1
            torch.testing.assert_close(m(x), want, rtol=0, atol=0)

    def test_attention_is_one_head_over_positions_row_by_row(self):
        m, _ = small_vae(4)
        att = m.decoder.mid_block.attentions[0]
        x = torch.randn(2, 32, 3, 5)
        with torch.no_grad():
            got = att(x).double()
            h = att.group_norm(x).double()
            for n in range(2):
                tok = h[n].reshape(32, 15).T  # position p = row·5 + col
                q, k, v = [tok @ getattr(att, p).weight.double().T + getattr(att, p).bias.double()
                           for p in ("to_q", "to_k", "to_v")]
                a = torch.softmax(q @ k.T / 32 ** 0.5, dim=-1)
                o = (a @ v) @ att.to_out[0].weight.double().T + att.to_out[0].bias.double()
                torch.testing.assert_close(got[n], x[n].double() + o.T.reshape(32, 3, 5), rtol=1e-5, atol=1e-5)


class LoaderTest(unittest.TestCase):
    def test_legacy_attention_names_load_equal_to_new_names(self):
        new = vae.load_decoder(os.path.join(FIXTURES, "vae-small"))
        old = vae.load_decoder(os.path.join(FIXTURES, "vae-small-legacy"))
        for k, v in new.state_dict().items():
            self.assertTrue(torch.equal(v, old.state_dict()[k]), k)
        sd, _ = safetensors_io.read(os.path.join(FIXTURES, "vae-small-legacy", vae.WEIGHTS_FILE))
        self.assertIn("decoder.mid_block.attentions.0.query.weight", sd)
        self.assertIn("decoder.mid_block.attentions.0.proj_attn.bias", sd)
        self.assertIn("encoder.conv_in.weight", sd)

    def test_fixture_cases_match_the_reference(self):
        for name in ("vae-small", "vae-small-legacy", "taesd-small"):
            folder = os.path.join(FIXTURES, name)
            m = vae.load_decoder(folder)
            cases, meta = safetensors_io.read(os.path.join(folder, "cases.safetensors"))
            self.assertEqual(int(meta["scale_factor"]), m.scale_factor)
            with torch.no_grad():
                y = m(cases["decode.latent"])
            torch.testing.assert_close(y, cases["decode.image"], rtol=1e-5, atol=1e-5, msg=name)
            _, _, h, w = cases["decode.latent"].shape
            self.assertNotEqual(h, w)

    def test_loader_ignores_encoder_keys_and_is_strict_otherwise(self):
        m, cfg = small_vae(5)
        with tempfile.TemporaryDirectory() as d:
            vae.save_decoder_folder(m, cfg, d)
            sd, _ = safetensors_io.read(os.path.join(d, vae.WEIGHTS_FILE))
            self.assertTrue(any(k.startswith("encoder.") for k in sd) and "quant_conv.weight" in sd)
            vae.load_decoder(d)
            for broken in ({**sd, "decoder.extra.weight": torch.zeros(1)},
                           {k: v for k, v in sd.items() if k != "decoder.conv_out.bias"},
                           {**sd, "decoder.conv_out.bias": torch.zeros(4)}):
                safetensors_io.write(os.path.join(d, vae.WEIGHTS_FILE), broken)
                with self.assertRaises(ValueError):
                    vae.load_decoder(d)

    def test_unknown_class_and_unsupported_options_fail(self):
        for cfg in ({"_class_name": "VQModel"}, dict(vae.TAESD_CONFIG, scaling_factor=0.5),
                    dict(mdf.VAE_SMALL, act_fn="relu"), dict(mdf.VAE_SMALL, latents_mean=[0.0] * 4)):
            with self.assertRaises(ValueError):
                vae.decoder_from_config(cfg)


class ConverterTest(unittest.TestCase):
    def test_ldm_checkpoint_round_trip_decodes_identically(self):
        m, _ = small_vae(6)
        sd = to_ldm(m.state_dict(), 2)
        sd["first_stage_model.encoder.conv_in.weight"] = torch.randn(16, 3, 3, 3)
        sd["first_stage_model.quant_conv.weight"] = torch.randn(8, 8, 1, 1)
        sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.randn(8, 4, 3, 3)  # not the autoencoder
        self.assertIn("first_stage_model.decoder.up.1.upsample.conv.weight", sd)  # LDM's reversed numbering
        self.assertEqual(tuple(sd["first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"].shape),
                         (16, 32, 1, 1))
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "sd.ckpt")
            torch.save({"state_dict": sd, "global_step": 1}, src)
            out = os.path.join(d, "vae")
            convert.convert_vae(src, out, norm_num_groups=8, onnx=False)
            back = vae.load_decoder(out)
            cfg = vae.read_config(out)
        for k in ("block_out_channels", "layers_per_block", "latent_channels", "out_channels", "norm_num_groups",
                  "scaling_factor", "shift_factor"):
            self.assertEqual(cfg[k], mdf.VAE_SMALL[k], k)
        self.assertEqual(cfg["_class_name"], "AutoencoderKL")
        x = torch.randn(2, 4, 3, 4)
        with torch.no_grad():
            torch.testing.assert_close(back(x), m(x), rtol=0, atol=0)

    def test_unknown_ldm_decoder_key_fails(self):
        m, _ = small_vae(7)
        sd = to_ldm(m.state_dict(), 2, prefix="")
        sd["decoder.up.1.attn.0.q.weight"] = torch.zeros(32, 32, 1, 1)
        with self.assertRaises(ValueError):
            convert.ldm_vae_to_diffusers(sd)

    def test_diffusers_folder_is_copied_as_is(self):
        src = os.path.join(FIXTURES, "vae-small-legacy")
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "copy")
            convert.convert_vae(src, out, onnx=False)
            for name in ("config.json", vae.WEIGHTS_FILE):
                with open(os.path.join(src, name), "rb") as a, open(os.path.join(out, name), "rb") as b:
                    self.assertEqual(a.read(), b.read(), name)

    def test_original_taesd_decoder_file(self):
        m = mdf.randomize(vae.TinyDecoder(mdf.TAESD_SMALL), 8)
        original = {f"{int(k.split('.')[2]) + 1}.{k.split('.', 3)[3]}": v for k, v in m.state_dict().items()}
        self.assertIn("1.weight", original)  # the original's layer 0 is the clamp
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "taesd_decoder.pth")
            torch.save(original, src)
            out = os.path.join(d, "taesd")
            convert.convert_vae(src, out, onnx=False)
            back = vae.load_decoder(out)
            self.assertEqual(vae.read_config(out)["num_decoder_blocks"], [3, 3, 3, 1])
        x = torch.randn(1, 4, 3, 2)
        with torch.no_grad():
            torch.testing.assert_close(back(x), m(x), rtol=0, atol=0)


class OnnxAndFixtureTest(unittest.TestCase):
    def test_fixture_onnx_io_names_and_dynamic_dims(self):
        import onnx
        for name, c_out in (("vae-small", 3), ("taesd-small", 3)):
            model = onnx.load(os.path.join(FIXTURES, name, vae.ONNX_FILE))
            onnx.checker.check_model(model)
            self.assertEqual([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")], [14])
            g = model.graph
            self.assertEqual([i.name for i in g.input], ["latent"])
            self.assertEqual([o.name for o in g.output], ["image"])

            def dims(v):
                return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            self.assertEqual(g.input[0].type.tensor_type.elem_type, onnx.TensorProto.FLOAT)
            self.assertEqual(g.output[0].type.tensor_type.elem_type, onnx.TensorProto.FLOAT)
            self.assertEqual(dims(g.input[0]), ["N", 4, "h", "w"])
            out = dims(g.output[0])
            self.assertEqual(out[:2], ["N", c_out])
            self.assertTrue(all(isinstance(d, str) and d for d in out[2:]), out)

    def test_staged_folder_replaces_only_when_complete(self):
        with tempfile.TemporaryDirectory() as d:
            final = os.path.join(d, "f")
            with vae.staged_folder(final) as tmp:
                open(os.path.join(tmp, "a"), "w").close()
            with self.assertRaises(RuntimeError):
                with vae.staged_folder(final) as tmp:
                    open(os.path.join(tmp, "b"), "w").close()
                    raise RuntimeError("crash")
            self.assertEqual(os.listdir(final), ["a"])
            self.assertEqual(os.listdir(d), ["f"])

    def test_real_fixture_marker_makes_reruns_skip(self):
        with tempfile.TemporaryDirectory() as d:
            folder = os.path.join(d, "taesd")
            rec = mdf.recipe("taesd", mdf.TAESD_SMALL, (1, 4, 2, 3), 1, False)
            self.assertFalse(mdf.is_complete(folder, rec))
            mdf.write_fixture(folder, mdf.TAESD_SMALL, (1, 4, 2, 3), 1, False, rec)
            self.assertTrue(mdf.is_complete(folder, rec))
            self.assertFalse(mdf.is_complete(folder, dict(rec, seed=2)))
            os.remove(os.path.join(folder, vae.ONNX_FILE))
            self.assertFalse(mdf.is_complete(folder, rec))

    def test_png_quantisation_matches_the_server(self):
        x = np.array([-1.0, 1.0, 0.0, -1.01, 0.99, -0.0039, 2.0, float("nan"), -0.9961], dtype=np.float32)
        self.assertEqual(decode_reference.to_bytes(x).tolist(), [0, 255, 128, 0, 254, 127, 255, 0, 0])


if __name__ == "__main__":
    unittest.main()
