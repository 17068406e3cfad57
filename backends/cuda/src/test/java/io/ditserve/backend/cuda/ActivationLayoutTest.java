package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.cuda.ActivationLayout.Buffer;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import org.junit.jupiter.api.Test;

class ActivationLayoutTest {
    /** DiT-XL/2 at 256 px: 4×32×32 latents, 256 tokens, D 1152, 16 heads, depth 28. */
    static ModelSpec xl2(int inputSize) {
        return new ModelSpec(Path.of("/nowhere/xl"), "xl", "", inputSize, 2, 4, 1152, 28, 16, 4.0, 1000, true,
                List.of(), ModelSpec.Space.LATENT, io.ditserve.backend.GuidanceMode.FIRST_THREE,
                new ModelSpec.Defaults(io.ditserve.backend.Sampler.DDIM, 50, 4.0, 0.0));
    }

    @Test
    void buffersOfDitXl2AtBatch32() throws Exception {
        ActivationLayout a = ActivationLayout.of(xl2(32), 32);
        long rows = 32 * 256;
        assertThat(a.length(Buffer.X_IN)).isEqualTo(32L * 4 * 32 * 32);
        assertThat(a.length(Buffer.PATCHES)).isEqualTo(rows * 16);
        assertThat(a.length(Buffer.X)).isEqualTo(rows * 1152);
        assertThat(a.length(Buffer.QKV)).isEqualTo(rows * 3 * 1152);
        assertThat(a.length(Buffer.HEADS)).isEqualTo(rows * 3 * 1152);
        assertThat(a.length(Buffer.MLP)).isEqualTo(rows * 4608);
        assertThat(a.length(Buffer.MOD)).isEqualTo(32L * (6 * 28 + 2) * 1152);
        assertThat(a.length(Buffer.FINAL)).isEqualTo(rows * 4 * 8);
        assertThat(a.length(Buffer.OUT)).isEqualTo(32L * 8 * 32 * 32);
        // 16 heads · 256² scores per sample: all 32 samples fit the 256 MiB budget at once
        assertThat(a.attentionChunk()).isEqualTo(32);
        assertThat(a.length(Buffer.SCORES)).isEqualTo(32L * 16 * 256 * 256);
        assertThat(a.totalBytes()).isLessThan(1L << 30);
    }

    @Test
    void bigImagesRunAttentionInChunks() throws Exception {
        ActivationLayout a = ActivationLayout.of(xl2(64), 32); // 512 px: 1024 tokens, 16M scores per sample
        assertThat(a.attentionChunk()).isEqualTo(4);
        assertThat(a.length(Buffer.SCORES)).isEqualTo(4L * 16 * 1024 * 1024);
    }

    @Test
    void buffersDoNotOverlapAndStartOn256Bytes() throws Exception {
        ActivationLayout a = ActivationLayout.of(xl2(32), 7);
        Buffer[] sorted = Buffer.values().clone();
        Arrays.sort(sorted, Comparator.comparingLong(a::offset));
        for (int i = 0; i < sorted.length; i++) {
            assertThat(a.offset(sorted[i]) % 64).as(sorted[i].name()).isZero();
            assertThat(a.length(sorted[i])).as(sorted[i].name()).isPositive();
            if (i > 0) {
                assertThat(a.offset(sorted[i])).isGreaterThanOrEqualTo(a.offset(sorted[i - 1]) + a.length(sorted[i - 1]));
            }
        }
        Buffer last = sorted[sorted.length - 1];
        assertThat(a.totalElements()).isGreaterThanOrEqualTo(a.offset(last) + a.length(last));
    }

    @Test
    void aBatchTooLargeForTheKernelsFailsNamingTheBuffer() {
        assertThatThrownBy(() -> ActivationLayout.of(xl2(32), 1 << 20))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining("batch of 1048576")
                .hasMessageContaining("use smaller batches");
    }
}
