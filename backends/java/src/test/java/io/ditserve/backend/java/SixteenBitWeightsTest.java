package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderConfigs;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.testkit.TextFixtures;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * F16/BF16 weights kept in 16 bits (java.weights=stored, {@link Panels}, {@link Table}) against the same weights
 * decoded to float32 at load (java.weights=f32): the same bits out, in about half the memory.
 */
class SixteenBitWeightsTest {

    /** Every one of the 65536 bit patterns decodes as Safetensors.decodeFloats does, on the vector and scalar paths. */
    @ParameterizedTest
    @EnumSource(Half.class)
    void everyBitPatternDecodesLikeTheLoader(Half half) throws Exception {
        MemorySegment all = Arena.ofAuto().allocate(2L * 65536 + 2);
        for (int i = 0; i < 65536; i++) {
            all.set(Half.LE, 2L * i, (short) i);
        }
        float[] expected = new float[65536];
        Safetensors.decodeFloats(Path.of("all"), new Safetensors.Entry("all", half.name(), new long[] {65536}, 0,
                2L * 65536), all, expected);
        // odd offsets and counts: the vector loop, then the scalar tail, at unaligned positions of both arrays
        for (int from : new int[] {0, 1, 7}) {
            int count = 65536 - from - 3;
            float[] got = new float[count + 5];
            half.decode(all, 2L * from, got, 5, count);
            for (int i = 0; i < count; i++) {
                assertThat(Float.floatToRawIntBits(got[5 + i])).as("%s bits %04x", half, from + i)
                        .isEqualTo(Float.floatToRawIntBits(expected[from + i]));
            }
        }
    }

    /** MatMul on 16-bit panels gives the bits of MatMul on their float32 decoding, whatever the shape. */
    @ParameterizedTest(name = "{0}: {1} rows, k {2}, n {3}")
    @CsvSource({"BF16, 13, 37, 5", "F16, 13, 37, 5", "BF16, 50, 64, 70", "F16, 7, 1, 33", "BF16, 1, 300, 97"})
    void sixteenBitPanelsGiveTheFloatProduct(Half half, int rows, int k, int n) {
        Random rnd = new Random(rows * 31L + k * 7L + n);
        MemorySegment w = Arena.ofAuto().allocate(2L * n * k); // W (n, k) as stored
        float[] wf = new float[n * k];
        for (int i = 0; i < n * k; i++) {
            short bits = half == Half.BF16 ? (short) (Float.floatToRawIntBits((float) rnd.nextGaussian()) >>> 16)
                    : Float.floatToFloat16((float) rnd.nextGaussian());
            w.set(Half.LE, 2L * i, bits);
            wf[i] = half.toFloat(bits);
        }
        float[] a = new float[rows * k];
        float[] bias = new float[n];
        for (int i = 0; i < a.length; i++) {
            a[i] = (float) rnd.nextGaussian();
        }
        for (int i = 0; i < n; i++) {
            bias[i] = (float) rnd.nextGaussian();
        }
        float[] packed = new float[MatMul.packedSize(k, n)];
        MatMul.pack(wf, 0, 1, k, k, n, packed);
        Panels p16 = Panels.of16(half, k, n);
        // two column ranges, as q | k of a fused projection are packed
        p16.packColumns(w, 0, 0, n / 2);
        p16.packColumns(w, 2L * (n / 2) * k, n / 2, n - n / 2);
        assertThat(p16.bytes()).isEqualTo(Panels.of(packed, k, n).bytes() / 2);
        float[] padded = MatMul.paddedBias(bias, n);
        float[] c32 = new float[rows * n];
        float[] c16 = new float[rows * n];
        new MatMul().a(a, 0, k).b(Panels.of(packed, k, n), padded).c(c32, 0, n).gelu()
                .compute(0, rows, 0, MatMul.panels(n), new float[MatMul.TILE]);
        new MatMul().a(a, 0, k).b(p16, padded).c(c16, 0, n).gelu()
                .compute(0, rows, 0, MatMul.panels(n), new float[MatMul.tileSize(p16)]);
        assertThat(c16).isEqualTo(c32);
    }

    private static BackendOptions weights(String mode) {
        return new BackendOptions(2, Map.of(JavaDitBackend.WEIGHTS_OPTION, mode));
    }

    /** The BF16 MMDiT fixture: the same output bytes, its weights in 16 bits apart from biases and norms. */
    @Test
    void mmditKeepsBf16WeightsAndItsOutput() throws Exception {
        var spec = TextFixtures.mmditSpec("mmdit-x-tiny");
        TextFixtures.MmditCase c = TextFixtures.mmditCase("mmdit-x-tiny");
        try (Backend stored = JavaDitBackend.create(spec, weights("stored"));
                Backend f32 = JavaDitBackend.create(spec, weights("f32"))) {
            assertThat(TextFixtures.run(stored, c).data()).isEqualTo(TextFixtures.run(f32, c).data());
            long s = ((JavaDitBackend) stored).weightBytes();
            long f = ((JavaDitBackend) f32).weightBytes();
            System.out.printf("mmdit-x-tiny: %d bytes of weights stored, %d as float32 (%.3f)%n", s, f, (double) s / f);
            assertThat((double) s / f).isBetween(0.5, 0.52);
        }
    }

    private static long weightBytes(TextEncoder e) {
        return e instanceof T5TextEncoder t ? t.weightBytes() : ((ClipTextEncoder) e).weightBytes();
    }

    /**
     * The T5 fixture (BF16) and the CLIP-G fixture (F16, shards): the same hidden states and pooled vectors, from
     * weights held in 16 bits (all but norms, biases and the position tables). t5-tiny's float32 relative-position
     * bias expanded to [heads, 256, 256] is a third of that tiny model (at T5-XXL: 16.8 MB of 9.5 GB), hence its
     * bound.
     */
    @ParameterizedTest
    @CsvSource({"t5-tiny, text_encoder_3, 256, 0.7", "clip-tiny-g, text_encoder_2, 0, 0.52"})
    void textEncodersKeepTheirWeightsAndTheirOutput(String name, String role, int maxTokens, double most)
            throws Exception {
        TextEncoderSpec spec = TextEncoderConfigs.load(TextFixtures.dir(name), role, maxTokens);
        int tokens = spec.maxTokens();
        Random rnd = new Random(5);
        int[][] ids = new int[3][tokens];
        for (int[] row : ids) {
            for (int t = 0; t < tokens; t++) {
                row[t] = rnd.nextInt(spec.vocab());
            }
        }
        try (TextEncoder stored = JavaTextEncoders.create(spec, weights("stored"));
                TextEncoder f32 = JavaTextEncoders.create(spec, weights("f32"))) {
            TextEncoder.Output a = stored.encode(ids, Cancellation.NEVER);
            TextEncoder.Output b = f32.encode(ids, Cancellation.NEVER);
            assertThat(a.hidden()).isEqualTo(b.hidden());
            assertThat(a.pooled()).isEqualTo(b.pooled());
            long s = weightBytes(stored);
            long f = weightBytes(f32);
            System.out.printf("%s: %d bytes of weights stored, %d as float32 (%.3f)%n", name, s, f, (double) s / f);
            assertThat((double) s / f).isBetween(0.5, most);
        }
    }

    /** A typo in the option is refused, naming what it knows. */
    @Test
    void anUnknownWeightsModeIsRefused() {
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> JavaDitBackend.keep16(weights("fp8")))
                .isInstanceOf(BackendException.class).hasMessageContaining("stored").hasMessageContaining("f32");
    }
}
