"""The Python client's option parsing and tensor files (no server needed)."""
import os
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
import dit_client  # noqa: E402


class FakeTensor:
    def __init__(self, shape, data):
        self.shape = shape
        self.data = data


class DitClientTest(unittest.TestCase):
    def test_formats_default_to_png_and_keep_order_without_repeats(self):
        self.assertEqual(dit_client.parse_formats(None), ["png"])
        self.assertEqual(dit_client.parse_formats(["png,tensor", "image-tensor", "PNG", "image_tensor"]),
                         ["png", "tensor", "image-tensor"])
        with self.assertRaises(Exception) as e:
            dit_client.parse_formats(["png,jpeg"])
        self.assertIn("got 'jpeg'", str(e.exception))

    def test_tensors_are_raw_little_endian_with_the_shape_in_the_name(self):
        values = np.arange(3 * 4 * 2, dtype="<f4") - 5.5
        with tempfile.TemporaryDirectory() as d:
            path = dit_client.save_tensor(d, "m-7", "image", FakeTensor([3, 4, 2], values.tobytes()))
            self.assertEqual(os.path.basename(path), "m-7.image.3x4x2.f32")
            np.testing.assert_array_equal(np.fromfile(path, dtype="<f4").reshape(3, 4, 2), values.reshape(3, 4, 2))
            with self.assertRaises(ValueError):
                dit_client.save_tensor(d, "m-7", "tensor", FakeTensor([3, 4, 3], values.tobytes()))

    def test_enums_resolve_from_the_descriptor_set_when_built(self):
        if not os.path.exists(dit_client.DEFAULT_PROTOSET):
            self.skipTest("the Maven build has not written the descriptor set yet")
        c = dit_client.DitClient("localhost:1")
        self.assertEqual(c.enum("OutputFormat", "OUTPUT_FORMAT_IMAGE_TENSOR"), 3)
        self.assertEqual(c.enum("PreviewDecoder", "PREVIEW_DECODER_TINY"), 2)
        self.assertEqual(c.enum("Sampler", dit_client.SAMPLERS["dpmpp-2m"]), 3)
        req = c.message("GenerateRequest")(model="m", output_formats=[1, 2, 3], preview_decoder=3)
        self.assertEqual(list(req.output_formats), [1, 2, 3])
        self.assertEqual(c.enum_name("PreviewDecoder", req.preview_decoder), "PREVIEW_DECODER_FULL")


if __name__ == "__main__":
    unittest.main()
