package io.ditserve.backend.cuda;

import io.ditserve.backend.DitConstants;
import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.testkit.Fixtures;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class WeightLayoutTest {
    @ParameterizedTest
    @ValueSource(strings = {"pixel-tiny", "latent-tiny", "fashion-dit"})
    void expectedShapesAreExactlyTheCheckpointsTensors(String model) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        try (Safetensors st = Safetensors.open(spec.file(CudaDitBackend.WEIGHTS_FILE))) {
            Map<String, long[]> shapes = io.ditserve.backend.DitCheckpoint.expectedShapes(spec);
            assertThat(shapes.keySet()).containsExactlyInAnyOrderElementsOf(st.entries().keySet());
            shapes.forEach((name, shape) -> assertThat(st.entries().get(name).shape()).as(name).containsExactly(shape));
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"pixel-tiny", "latent-tiny", "fashion-dit"})
    void modulationWeightsAndBiasesArePackedBackToBack(String model) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        WeightLayout w = new WeightLayout(spec);
        long d = spec.hiddenSize();
        for (String suffix : List.of(".weight", ".bias")) {
            long per = suffix.equals(".weight") ? 6 * d * d : 6 * d;
            long base = suffix.equals(".weight") ? w.modulationWeightOffset() : w.modulationBiasOffset();
            for (int i = 0; i < spec.depth(); i++) {
                assertThat(w.offset("blocks." + i + ".adaLN_modulation.1" + suffix)).isEqualTo(base + i * per);
            }
            assertThat(w.offset("final_layer.adaLN_modulation.1" + suffix)).isEqualTo(base + spec.depth() * per);
        }
        assertThat(w.modulationWidth()).isEqualTo((6 * spec.depth() + 2) * spec.hiddenSize());
        assertThat(w.blockModOffset(1)).isEqualTo(6 * spec.hiddenSize());
        assertThat(w.finalModOffset()).isEqualTo(6 * spec.depth() * spec.hiddenSize());
    }

    @ParameterizedTest
    @ValueSource(strings = {"pixel-tiny", "latent-tiny", "fashion-dit"})
    void slotsDoNotOverlapAndOthersAreAligned(String model) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        WeightLayout w = new WeightLayout(spec);
        List<WeightLayout.Slot> slots = new ArrayList<>(w.slots().values());
        assertThat(slots).hasSize(io.ditserve.backend.DitCheckpoint.expectedShapes(spec).size() + 1);
        slots.sort(Comparator.comparingLong(WeightLayout.Slot::offset));
        for (int i = 1; i < slots.size(); i++) {
            WeightLayout.Slot prev = slots.get(i - 1);
            assertThat(slots.get(i).offset()).as(slots.get(i).name()).isGreaterThanOrEqualTo(prev.offset() + prev.length());
        }
        for (WeightLayout.Slot s : slots) {
            assertThat(s.offset() % 4).as("16-byte alignment of %s", s.name()).isZero();
            if (!s.name().contains("adaLN_modulation")) {
                assertThat(s.offset() % WeightLayout.ALIGN).as(s.name()).isZero();
            }
        }
        WeightLayout.Slot last = slots.getLast();
        assertThat(w.totalFloats()).isGreaterThanOrEqualTo(last.offset() + last.length());
        assertThat(w.slots().get(WeightLayout.FREQS).length()).isEqualTo(DitConstants.FREQ_HALF);
    }
}
