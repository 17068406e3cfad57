package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.testkit.MmditConformance;
import io.ditserve.backend.testkit.SafetensorsWriter;
import io.ditserve.backend.testkit.TextFixtures;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SD3's MMDiT on the java backend: the shared suite ({@link MmditConformance}: parity with tools/sd3/mmdit.py on the
 * fixtures of tools/make_mmdit_fixtures.py, mmdit-tiny in F32 and mmdit-x-tiny in BF16 shards; batches, buffers,
 * cancellation, arguments; docs/TEXT_MODELS.md "MMDiT"), every sample of a batch getting the bytes it gets alone,
 * on one thread as on two; and here the checkpoint's validation (missing, unexpected and misshapen tensors, an index
 * that disagrees with its shards), BF16 shards against their F32 copy, and the scalar path's refusal.
 */
class MmditConformanceTest extends MmditConformance {
    @TempDir
    Path dir;

    @Override
    protected Backend create(ModelSpec spec, int threads) throws BackendException {
        return backend(spec, threads);
    }

    @Override
    protected double batchTolerance() {
        return 0;
    }

    static Backend backend(ModelSpec spec, int threads) throws BackendException {
        return new JavaBackendProvider().create(spec, BackendOptions.ofThreads(threads));
    }

    @Test
    void theScalarPathSaysItHasNoMmdit() throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec("mmdit-tiny");
        assertThatThrownBy(() -> JavaBackends.backend(spec, "scalar", 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("java.path=scalar has no MMDiT");
    }

    /** The mmdit-tiny tensors, decoded, for tests that write a changed copy. */
    private Map<String, SafetensorsWriter.F32> tensorsOf(String name) throws Exception {
        Map<String, SafetensorsWriter.F32> tensors = new LinkedHashMap<>();
        for (Map.Entry<String, MmditCheckpoint.Located> e : MmditCheckpoint.locate(TextFixtures.dir(name)).entrySet()) {
            try (Safetensors st = Safetensors.open(e.getValue().file())) {
                tensors.put(e.getKey(), new SafetensorsWriter.F32(e.getValue().entry().shape(), st.floats(e.getKey())));
            }
        }
        return tensors;
    }

    /** Writes config.json of {@code name} and {@code tensors} as one F32 file into {@code dir}; loads it. */
    private Backend loadCopy(String name, Map<String, SafetensorsWriter.F32> tensors) throws Exception {
        Files.copy(TextFixtures.dir(name).resolve(ModelConfigs.CONFIG_FILE), dir.resolve(ModelConfigs.CONFIG_FILE));
        SafetensorsWriter.write(dir.resolve(MmditCheckpoint.SINGLE_FILE), tensors);
        return backend(TextFixtures.mmditSpec(dir), 1);
    }

    @Test
    void aMissingTensorIsNamed() throws Exception {
        Map<String, SafetensorsWriter.F32> tensors = tensorsOf("mmdit-tiny");
        tensors.remove("transformer_blocks.1.attn.add_k_proj.bias");
        assertThatThrownBy(() -> loadCopy("mmdit-tiny", tensors).close()).isInstanceOf(BackendException.class)
                .hasMessageContaining("'transformer_blocks.1.attn.add_k_proj.bias' is missing");
    }

    @Test
    void anUnexpectedTensorIsNamed() throws Exception {
        Map<String, SafetensorsWriter.F32> tensors = tensorsOf("mmdit-tiny");
        // the last block is context_pre_only: it has no to_add_out
        tensors.put("transformer_blocks.2.attn.to_add_out.bias", new SafetensorsWriter.F32(new long[] {32},
                new float[32]));
        assertThatThrownBy(() -> loadCopy("mmdit-tiny", tensors).close()).isInstanceOf(BackendException.class)
                .hasMessageContaining("unexpected tensor 'transformer_blocks.2.attn.to_add_out.bias'")
                .hasMessageContaining(MmditCheckpoint.SINGLE_FILE);
    }

    @Test
    void aMisshapenTensorIsNamed() throws Exception {
        Map<String, SafetensorsWriter.F32> tensors = tensorsOf("mmdit-tiny");
        tensors.put("transformer_blocks.0.norm1.linear.bias", new SafetensorsWriter.F32(new long[] {288},
                new float[288])); // 9D: a dual-attention block's, in a model without any
        assertThatThrownBy(() -> loadCopy("mmdit-tiny", tensors).close()).isInstanceOf(BackendException.class)
                .hasMessageContaining("'transformer_blocks.0.norm1.linear.bias' has shape [288], expected [192]");
    }

    /** The index must list every tensor of a shard under that shard, and every indexed tensor must be there. */
    @Test
    void anIndexThatDisagreesWithItsShardsFails() throws Exception {
        Path src = TextFixtures.dir("mmdit-x-tiny");
        for (Path f : Files.list(src).toList()) {
            Files.copy(f, dir.resolve(f.getFileName()));
        }
        Path index = dir.resolve(MmditCheckpoint.INDEX_FILE);
        String json = Files.readString(index);
        Files.writeString(index, json.replace("\"proj_out.bias\": \"diffusion_pytorch_model-00001-of-00003",
                "\"proj_out.bias\": \"diffusion_pytorch_model-00002-of-00003"));
        assertThat(Files.readString(index)).isNotEqualTo(json);
        assertThatThrownBy(() -> MmditCheckpoint.locate(dir)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'proj_out.bias'");
        Files.writeString(index, json.replace("\"weight_map\": {", "\"weight_map\": {\n    \"extra.weight\": "
                + "\"diffusion_pytorch_model-00003-of-00003.safetensors\","));
        assertThatThrownBy(() -> MmditCheckpoint.locate(dir)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'extra.weight'");
        Files.writeString(index, json.replace("diffusion_pytorch_model-00003-of-00003.safetensors",
                "../diffusion_pytorch_model-00003-of-00003.safetensors"));
        assertThatThrownBy(() -> MmditCheckpoint.locate(dir)).isInstanceOf(BackendException.class)
                .hasMessageContaining("not a .safetensors file name in the folder");
    }

    /**
     * The BF16 shards load as the F32 values they hold: the same folder rewritten as one F32 file (every value
     * decoded exactly) gives the same bytes; and each BF16 weight is its F32 value rounded to 8 bits of mantissa.
     */
    @Test
    void bf16ShardsEqualTheirF32Copy() throws Exception {
        Map<String, MmditCheckpoint.Located> located = MmditCheckpoint.locate(TextFixtures.dir("mmdit-x-tiny"));
        assertThat(located.values().stream().map(MmditCheckpoint.Located::file).distinct()).hasSize(3);
        assertThat(located.values()).allSatisfy(t -> assertThat(t.entry().dtype()).isEqualTo("BF16"));
        Map<String, SafetensorsWriter.F32> tensors = tensorsOf("mmdit-x-tiny");
        for (SafetensorsWriter.F32 t : tensors.values()) {
            for (float v : t.values()) {
                assertThat(Float.floatToRawIntBits(v) & 0xffff).isZero();
            }
        }
        TextFixtures.MmditCase c = TextFixtures.mmditCase("mmdit-x-tiny");
        try (Backend shards = backend(TextFixtures.mmditSpec("mmdit-x-tiny"), 2);
                Backend f32 = loadCopy("mmdit-x-tiny", tensors)) {
            assertThat(TextFixtures.run(f32, c).data()).isEqualTo(TextFixtures.run(shards, c).data());
        }
    }
}
