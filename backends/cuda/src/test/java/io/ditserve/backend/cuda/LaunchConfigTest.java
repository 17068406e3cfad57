package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

class LaunchConfigTest {
    @Test
    void elementwiseCoversEveryElementOrCapsTheGrid() {
        assertThat(LaunchConfig.elementwise(1)).isEqualTo(new LaunchConfig(1, 256));
        assertThat(LaunchConfig.elementwise(256)).isEqualTo(new LaunchConfig(1, 256));
        assertThat(LaunchConfig.elementwise(257)).isEqualTo(new LaunchConfig(2, 256));
        // DiT-XL/2, batch 32: the MLP activations, 8192 rows of 4608
        assertThat(LaunchConfig.elementwise(8192L * 4608)).isEqualTo(new LaunchConfig(147456, 256));
        // beyond the cap the grid-stride loop does the rest
        assertThat(LaunchConfig.elementwise(LaunchConfig.MAX_ELEMENTS).grid()).isEqualTo(LaunchConfig.MAX_ELEMENTWISE_GRID);
    }

    @Test
    void elementwiseRejectsWhatTheKernelsCannotIndex() {
        assertThatThrownBy(() -> LaunchConfig.elementwise(0)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> LaunchConfig.elementwise(LaunchConfig.MAX_ELEMENTS + 1))
                .isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void rowKernelsGetOneBlockPerRowOfWholeWarps() {
        assertThat(LaunchConfig.rows(10, 1)).isEqualTo(new LaunchConfig(10, 32));
        assertThat(LaunchConfig.rows(10, 16)).isEqualTo(new LaunchConfig(10, 32)); // softmax over 16 tokens
        assertThat(LaunchConfig.rows(10, 64)).isEqualTo(new LaunchConfig(10, 64));
        assertThat(LaunchConfig.rows(10, 96)).isEqualTo(new LaunchConfig(10, 96));
        assertThat(LaunchConfig.rows(10, 100)).isEqualTo(new LaunchConfig(10, 128));
        assertThat(LaunchConfig.rows(4096, 1152)).isEqualTo(new LaunchConfig(4096, 256)); // XL LayerNorm
        assertThat(LaunchConfig.rows(Integer.MAX_VALUE, 256).grid()).isEqualTo(Integer.MAX_VALUE);
    }

    @Test
    void longRowsUseUpToAThousandThreads() {
        assertThat(LaunchConfig.longRows(32, 120)).isEqualTo(new LaunchConfig(32, 128));
        // the group norms of a 512 px image: 4 channels of 512×512 per group
        assertThat(LaunchConfig.longRows(32, 4 * 512 * 512)).isEqualTo(new LaunchConfig(32, 1024));
    }

    @Test
    void invalidShapesAreRejected() {
        assertThatThrownBy(() -> new LaunchConfig(0, 32)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> new LaunchConfig(1, 48)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> new LaunchConfig(1, 2048)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> LaunchConfig.rows(1, 0)).isInstanceOf(IllegalArgumentException.class);
    }
}
