package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DecoderCheckpoint;
import io.ditserve.backend.DecoderSpec;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The decoders' buffer sizes, run sizes and weight packing, on the published architectures. */
class DecoderBuffersTest {
    /** sd-vae-ft-ema / sd-vae-ft-mse (docs/DECODERS.md). */
    static final DecoderSpec SD_VAE = new DecoderSpec(Path.of("vae"), DecoderSpec.Kind.FULL, 4, 3,
            List.of(128, 256, 512, 512), 2, List.of(), 32, 0.18215, 0, true, true, 2, 0);
    /** TAESD. */
    static final DecoderSpec TAESD = new DecoderSpec(Path.of("taesd"), DecoderSpec.Kind.TINY, 4, 3,
            List.of(64, 64, 64, 64), 0, List.of(3, 3, 3, 1), 0, 1, 0, false, false, 2, 3);

    @Test
    void needsOfTheSdVaeAt256Px() {
        long hw = 32 * 32;
        DecoderBuffers.Needs n = DecoderBuffers.needs(SD_VAE, hw);
        assertThat(n.latent()).isEqualTo(4 * hw);
        // widest activation: 256 channels at 256×256 (up block 2's upsampler output, up block 3's first input)
        assertThat(n.activation()).isEqualTo(256 * 256 * 256L);
        // largest columns: 256 channels at 256×256 (up block 2's upsampler conv, up block 3's first conv1)
        assertThat(n.columns()).isEqualTo(256 * 9 * 256 * 256L);
        assertThat(n.columnRows()).isEqualTo(512 * 9L);
        assertThat(n.scores()).isEqualTo(hw * hw);
        assertThat(n.output()).isEqualTo(3 * 256 * 256L);
    }

    @Test
    void needsOfTaesdAt512Px() {
        DecoderBuffers.Needs n = DecoderBuffers.needs(TAESD, 64 * 64);
        assertThat(n.activation()).isEqualTo(64 * 512 * 512L);
        assertThat(n.columns()).isEqualTo(64 * 9 * 512 * 512L);
        assertThat(n.columnRows()).isEqualTo(64 * 9L);
        assertThat(n.scores()).isZero();
    }

    @Test
    void largeBatchesRunInParts() throws BackendException {
        DecoderBuffers.Budgets b = DecoderBuffers.DEFAULT_BUDGETS;
        // 512 px: 67 M values per activation per sample, 4 samples per 1 GiB buffer
        assertThat(DecoderBuffers.samplesPerRun(SD_VAE, 64 * 64, 16, b)).isEqualTo(4);
        assertThat(DecoderBuffers.samplesPerRun(SD_VAE, 64 * 64, 2, b)).isEqualTo(2);
        assertThat(DecoderBuffers.samplesPerRun(SD_VAE, 32 * 32, 32, b)).isEqualTo(16);
        // one sample above the budget still runs alone
        assertThat(DecoderBuffers.samplesPerRun(SD_VAE, 64 * 64, 3, new DecoderBuffers.Budgets(1000, 10, 10)))
                .isEqualTo(1);
        assertThatThrownBy(() -> DecoderBuffers.samplesPerRun(SD_VAE, 512 * 512, 1, b))
                .isInstanceOf(BackendException.class).hasMessageContaining("too large");
    }

    @Test
    void memoryStaysBoundedAt512Px() {
        DecoderBuffers layout = DecoderBuffers.of(SD_VAE, 4, 64 * 64, DecoderBuffers.DEFAULT_BUDGETS);
        assertThat(layout.length(DecoderBuffers.Buffer.COL)).isEqualTo(1L << 25); // 128 MiB of column tiles
        assertThat(layout.length(DecoderBuffers.Buffer.SCORES)).isEqualTo(1L << 26); // 4 samples of 4096²
        assertThat(layout.length(DecoderBuffers.Buffer.X)).isEqualTo(4 * 256 * 512 * 512L);
        assertThat(layout.totalBytes()).isLessThan(3L * (1L << 30) + (1L << 29));
        for (DecoderBuffers.Buffer b : DecoderBuffers.Buffer.values()) {
            assertThat(layout.offset(b) % WeightLayout.ALIGN).isZero();
            assertThat(layout.length(b)).isPositive().isLessThanOrEqualTo(LaunchConfig.MAX_ELEMENTS);
        }
    }

    @Test
    void smallLayoutsHoldOneRowOfScoresAndOnePixelOfColumns() {
        DecoderBuffers layout = DecoderBuffers.of(SD_VAE, 1, 30, new DecoderBuffers.Budgets(1L << 20, 10, 1));
        assertThat(layout.length(DecoderBuffers.Buffer.COL)).isEqualTo(512 * 9L);
        assertThat(layout.length(DecoderBuffers.Buffer.SCORES)).isEqualTo(30);
        DecoderBuffers tiny = DecoderBuffers.of(TAESD, 2, 30, DecoderBuffers.DEFAULT_BUDGETS);
        assertThat(tiny.length(DecoderBuffers.Buffer.SCORES)).isEqualTo(1); // no attention
    }

    @Test
    void attentionWeightsArePackedIntoOneLinear() {
        DecoderWeights w = new DecoderWeights(SD_VAE);
        String a = "decoder.mid_block.attentions.0.";
        assertThat(w.offset(DecoderWeights.QKV_WEIGHT)).isZero();
        assertThat(w.offset(a + "to_k.weight")).isEqualTo(512 * 512L);
        assertThat(w.offset(a + "to_v.weight")).isEqualTo(2 * 512 * 512L);
        long bias = w.offset(DecoderWeights.QKV_BIAS);
        assertThat(bias % WeightLayout.ALIGN).isZero();
        assertThat(bias).isGreaterThanOrEqualTo(3 * 512 * 512L);
        assertThat(w.offset(a + "to_k.bias")).isEqualTo(bias + 512);
        assertThat(w.offset(a + "to_v.bias")).isEqualTo(bias + 1024);
        assertThat(w.slots()).hasSameSizeAs(DecoderCheckpoint.expectedShapes(SD_VAE));
        long params = DecoderCheckpoint.parameterCount(SD_VAE);
        assertThat(w.totalFloats()).isBetween(params, params + 64L * w.slots().size());
        assertThat(new DecoderWeights(TAESD).slots()).hasSameSizeAs(DecoderCheckpoint.expectedShapes(TAESD));
    }

    @Test
    void pollsOncePerLayer() {
        // conv_in, 2 mid resnets, attention, 4 × 3 resnets, 3 upsamplers, the output
        assertThat(DecoderProgram.pollsPerRun(SD_VAE)).isEqualTo(1 + 2 + 1 + 12 + 3 + 1);
        // the first conv, 10 blocks, 3 upsampling convs, the last conv
        assertThat(DecoderProgram.pollsPerRun(TAESD)).isEqualTo(1 + 10 + 4);
    }
}
