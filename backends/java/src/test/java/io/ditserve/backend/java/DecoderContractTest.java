package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderCheckpoint;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.DecoderFixtures;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.SafetensorsWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.ServiceLoader;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The Java decoders beyond the shared conformance suite (JavaDecoderConformanceTest): the vector path against the
 * scalar reference on other shapes and batches, buffer reuse, thread-count invariance, weight validation, option
 * checks and the exact places the cancellation is polled.
 */
class DecoderContractTest {
    @TempDir
    Path tmp;

    /** Latent shapes (h, w) the fixtures do not cover: 1 × 1, odd and wide, and more positions than a tile. */
    @ParameterizedTest
    @CsvSource({
        "vae-small, 1, 1", "vae-small, 3, 7", "vae-small, 9, 4",
        "taesd-small, 1, 1", "taesd-small, 2, 5", "taesd-small, 7, 3"})
    void vectorMatchesScalar(String name, int h, int w) throws Exception {
        Path dir = DecoderFixtures.small(name);
        Tensor latent = DecoderFixtures.randomLatent(h * 31L + w, 3, 4, h, w);
        try (Decoder scalar = JavaBackends.decoder(dir, "scalar", 1);
                Decoder vector = JavaBackends.decoder(dir, "vector", 2)) {
            Tensor expected = DecoderFixtures.decode(scalar, latent);
            Tensor actual = DecoderFixtures.decode(vector, latent);
            assertThat(Fixtures.relativeError(actual, expected)).isLessThan(1e-5);
        }
    }

    /**
     * Configurations the fixtures do not have, on the fixtures' weights: TAESD upsampling by 3 (the vector path's
     * upsampled-image route, not the ×2 phase convs) and the VAE without post_quant_conv and mid attention.
     */
    @ParameterizedTest
    @ValueSource(strings = {"taesd-up3", "vae-plain"})
    void variantConfigsMatchScalar(String variant) throws Exception {
        boolean tiny = variant.startsWith("taesd");
        Path src = DecoderFixtures.small(tiny ? "taesd-small" : "vae-small");
        String config = Files.readString(src.resolve("config.json"));
        Map<String, SafetensorsWriter.F32> tensors = new LinkedHashMap<>();
        try (Safetensors st = Safetensors.open(src.resolve(DecoderSpec.WEIGHTS_FILE))) {
            for (Safetensors.Entry e : st.entries().values()) {
                if (tiny || !(e.name().startsWith("post_quant_conv.") || e.name().contains(".attentions."))) {
                    tensors.put(e.name(), new SafetensorsWriter.F32(e.shape(), st.floats(e.name())));
                }
            }
        }
        config = tiny
                ? config.replace("\"upsampling_scaling_factor\": 2", "\"upsampling_scaling_factor\": 3")
                : config.replace("\"act_fn\"",
                        "\"use_post_quant_conv\": false, \"mid_block_add_attention\": false, \"act_fn\"");
        Files.writeString(tmp.resolve("config.json"), config);
        SafetensorsWriter.write(tmp.resolve(DecoderSpec.WEIGHTS_FILE), tensors);
        DecoderSpec spec = DecoderConfigs.load(tmp);
        if (tiny) {
            assertThat(spec.scaleFactor()).isEqualTo(27);
        } else {
            assertThat(spec.postQuantConv() || spec.midBlockAttention()).isFalse();
        }
        Tensor latent = DecoderFixtures.randomLatent(9, 2, 4, 3, 2);
        try (Decoder scalar = JavaBackends.decoder(tmp, "scalar", 1);
                Decoder vector = JavaBackends.decoder(tmp, "vector", 2)) {
            Tensor expected = DecoderFixtures.decode(scalar, latent);
            assertThat(Fixtures.relativeError(DecoderFixtures.decode(vector, latent), expected)).isLessThan(1e-5);
        }
    }

    /**
     * Widths that are not multiples of the vector length, other latent/output channel counts (an output conv wider
     * than the dot-product path), on random weights written for the config: vector equals scalar.
     */
    @ParameterizedTest
    @ValueSource(strings = {
        "{\"_class_name\": \"AutoencoderKL\", \"block_out_channels\": [8, 24], \"layers_per_block\": 1,"
                + " \"norm_num_groups\": 4, \"latent_channels\": 3, \"out_channels\": 5, \"scaling_factor\": 0.5,"
                + " \"shift_factor\": 0.25}",
        "{\"_class_name\": \"AutoencoderTiny\", \"decoder_block_out_channels\": [20, 20],"
                + " \"num_decoder_blocks\": [1, 2], \"latent_channels\": 6, \"out_channels\": 1}"})
    void oddWidthsMatchScalar(String config) throws Exception {
        Files.writeString(tmp.resolve("config.json"), config);
        DecoderSpec spec = DecoderConfigs.load(tmp);
        Random rnd = new Random(3);
        Map<String, SafetensorsWriter.F32> tensors = new LinkedHashMap<>();
        for (Map.Entry<String, long[]> e : DecoderCheckpoint.expectedShapes(spec).entrySet()) {
            long[] shape = e.getValue();
            int n = (int) Arrays.stream(shape).reduce(1, (a, b) -> a * b);
            double scale = shape.length == 1 ? 0.2 : 1 / Math.sqrt((double) n / shape[0]);
            float[] v = new float[n];
            for (int i = 0; i < n; i++) {
                v[i] = (float) (rnd.nextGaussian() * scale + (shape.length == 1 && e.getKey().contains("norm")
                        && e.getKey().endsWith(".weight") ? 1 : 0));
            }
            tensors.put(e.getKey(), new SafetensorsWriter.F32(shape, v));
        }
        SafetensorsWriter.write(tmp.resolve(DecoderSpec.WEIGHTS_FILE), tensors);
        Tensor latent = DecoderFixtures.randomLatent(4, 2, spec.latentChannels(), 3, 5);
        try (Decoder scalar = JavaBackends.decoder(tmp, "scalar", 1);
                Decoder vector = JavaBackends.decoder(tmp, "vector", 2)) {
            Tensor expected = DecoderFixtures.decode(scalar, latent);
            assertThat(expected.maxAbs()).isGreaterThan(0.1f);
            assertThat(Fixtures.relativeError(DecoderFixtures.decode(vector, latent), expected)).isLessThan(1e-5);
        }
    }

    /** The legacy attention names (query/key/value/proj_attn) load the same weights: identical output. */
    @ParameterizedTest
    @ValueSource(strings = {"vector", "scalar"})
    void legacyNamesDecodeIdentically(String path) throws Exception {
        Tensor latent = DecoderFixtures.decodeCase(DecoderFixtures.small("vae-small")).latent();
        try (Decoder current = JavaBackends.decoder(DecoderFixtures.small("vae-small"), path, 2);
                Decoder legacy = JavaBackends.decoder(DecoderFixtures.small("vae-small-legacy"), path, 2)) {
            assertThat(DecoderFixtures.decode(legacy, latent).data())
                    .containsExactly(DecoderFixtures.decode(current, latent).data());
        }
    }

    /** Repeated calls, a larger latent (the buffers grow) and then a smaller one again give the same bytes. */
    @ParameterizedTest
    @ValueSource(strings = {"vae-small", "taesd-small"})
    void buffersAreReusedCorrectly(String name) throws Exception {
        Path dir = DecoderFixtures.small(name);
        Tensor small = DecoderFixtures.randomLatent(1, 2, 4, 3, 5);
        Tensor large = DecoderFixtures.randomLatent(2, 1, 4, 8, 6);
        try (Decoder d = JavaBackends.decoder(dir, "vector", 2);
                Decoder fresh = JavaBackends.decoder(dir, "vector", 2)) {
            float[] first = DecoderFixtures.decode(d, small).data();
            assertThat(DecoderFixtures.decode(d, small).data()).containsExactly(first);
            float[] largeOut = DecoderFixtures.decode(d, large).data();
            assertThat(DecoderFixtures.decode(d, small).data()).containsExactly(first);
            assertThat(DecoderFixtures.decode(fresh, large).data()).containsExactly(largeOut);
        }
    }

    /**
     * Image 1 of a batch of 2 decoded on two threads equals the same latent decoded alone on one thread, byte for
     * byte (the conformance suite checks a batch against single decodes on the same decoder).
     */
    @ParameterizedTest
    @CsvSource({"vae-small, vector", "vae-small, scalar", "taesd-small, vector", "taesd-small, scalar"})
    void theThreadCountDoesNotChangeTheBytes(String name, String path) throws Exception {
        Path dir = DecoderFixtures.small(name);
        Tensor batch = DecoderFixtures.randomLatent(5, 2, 4, 5, 4);
        try (Decoder d = JavaBackends.decoder(dir, path, 2);
                Decoder single = JavaBackends.decoder(dir, path, 1)) {
            Tensor both = DecoderFixtures.decode(d, batch);
            assertThat(DecoderFixtures.decode(single, Fixtures.sample(batch, 1)).data())
                    .containsExactly(Fixtures.sample(both, 1).data());
        }
    }

    /** A tensor whose shape disagrees with config.json fails at load, naming the file, the key and both shapes. */
    @Test
    void shapeMismatchNamesTheKey() throws Exception {
        Path src = DecoderFixtures.small("vae-small");
        Files.copy(src.resolve("config.json"), tmp.resolve("config.json"));
        Map<String, SafetensorsWriter.F32> tensors = new LinkedHashMap<>();
        try (Safetensors st = Safetensors.open(src.resolve(DecoderSpec.WEIGHTS_FILE))) {
            for (Safetensors.Entry e : st.entries().values()) {
                tensors.put(e.name(), new SafetensorsWriter.F32(e.shape(), st.floats(e.name())));
            }
        }
        String key = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight";
        assertThat(tensors).containsKey(key);
        tensors.put(key, new SafetensorsWriter.F32(new long[] {16, 16, 1, 1}, new float[256]));
        Path weights = tmp.resolve(DecoderSpec.WEIGHTS_FILE);
        SafetensorsWriter.write(weights, tensors);
        DecoderSpec spec = DecoderConfigs.load(tmp);
        for (String path : new String[] {"vector", "scalar"}) {
            assertThatThrownBy(() -> new JavaBackendProvider().createDecoder(spec,
                            new BackendOptions(1, Map.of(JavaDitBackend.PATH_OPTION, path))))
                    .isInstanceOf(BackendException.class)
                    .hasMessageContaining(weights.toString())
                    .hasMessageContaining(key)
                    .hasMessageContaining("[16, 16, 1, 1]")
                    .hasMessageContaining("[16, 32, 1, 1]");
        }
    }

    @Test
    void unknownPathIsRejected() throws Exception {
        DecoderSpec spec = DecoderConfigs.load(DecoderFixtures.small("taesd-small"));
        assertThatThrownBy(() -> new JavaBackendProvider().createDecoder(spec,
                        new BackendOptions(1, Map.of(JavaDitBackend.PATH_OPTION, "gpu"))))
                .isInstanceOf(BackendException.class).hasMessageContaining("[gpu]");
    }

    /**
     * The flag is polled between layers (every resnet, the attention, every upsampling; every TAESD block and
     * stage): a cancellation that fires mid-decode stops it there, and the decoder stays usable.
     */
    @ParameterizedTest
    @CsvSource({"vae-small, vector", "vae-small, scalar", "taesd-small, vector", "taesd-small, scalar"})
    void cancellationStopsADecode(String name, String path) throws Exception {
        Path dir = DecoderFixtures.small(name);
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        AtomicInteger polls = new AtomicInteger();
        try (Decoder d = JavaBackends.decoder(dir, path, 2)) {
            DecoderFixtures.decode(d, c.latent(), () -> polls.incrementAndGet() < 0);
            int perDecode = polls.get();
            // vae-small: per image 2 mid resnets + attention + 2·2 up resnets + 1 upsampler + the output = 9
            // taesd-small: per image 10 blocks + 4 stage ends = 14
            assertThat(perDecode).isEqualTo(2 * (name.startsWith("vae") ? 9 : 14));
            polls.set(0);
            assertThatThrownBy(() -> DecoderFixtures.decode(d, c.latent(), () -> polls.incrementAndGet() == 3))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(polls).hasValue(3);
            assertThatThrownBy(() -> DecoderFixtures.decode(d, c.latent(), () -> true))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(Fixtures.relativeError(DecoderFixtures.decode(d, c.latent()), c.image())).isLessThan(1e-5);
        }
    }

    /** The service-loaded provider offers the decoders (the server finds them this way). */
    @Test
    void serviceLoadedProviderCreatesDecoders() throws Exception {
        BackendProvider java = ServiceLoader.load(BackendProvider.class).stream().map(ServiceLoader.Provider::get)
                .filter(p -> p.name().equals("java")).findFirst().orElseThrow();
        DecoderSpec spec = DecoderConfigs.load(DecoderFixtures.small("vae-small"));
        try (Decoder d = java.createDecoder(spec, BackendOptions.ofThreads(1))) {
            assertThat(d.spec()).isEqualTo(spec);
            assertThat(d).isInstanceOf(JavaDecoder.class);
        }
    }
}
