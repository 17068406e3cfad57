package io.ditserve.backend;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The one option parser every backend uses: the same rules and messages for java, onnx and cuda. */
class BackendOptionsTest {
    private static final BackendOptions OPTIONS = new BackendOptions(2, Map.of("x.path", " Scalar ", "x.n", "7",
            "x.flag", "true", "y.other", "anything"));

    @Test
    void knownKeysChoicesIntegersAndBooleans() throws Exception {
        OPTIONS.checkKeys("x", List.of("x.path", "x.n", "x.flag"));
        assertThat(OPTIONS.choice("x", "x.path", List.of("vector", "scalar"))).isEqualTo("scalar");
        assertThat(OPTIONS.choice("x", "x.absent", List.of("vector", "scalar"))).isEqualTo("vector");
        assertThat(OPTIONS.intAtLeast("x.n", 1, 1)).isEqualTo(7);
        assertThat(OPTIONS.intAtLeast("x.absent", 3, 1)).isEqualTo(3);
        assertThat(OPTIONS.bool("x.flag", false)).isTrue();
        assertThat(OPTIONS.bool("x.absent", false)).isFalse();
    }

    @Test
    void everyMistakeNamesTheKeyAndWhatIsAllowed() {
        assertThatThrownBy(() -> OPTIONS.checkKeys("x", List.of("x.path")))
                .hasMessageStartingWith("Unknown option [x.").hasMessageEndingWith("of the x backend, known options"
                        + " [x.path]");
        assertThatThrownBy(() -> OPTIONS.choice("x", "x.path", List.of("vector")))
                .hasMessage("Unknown x.path [scalar] of the x backend, known options [vector]");
        assertThatThrownBy(() -> OPTIONS.intAtLeast("x.n", 1, 8)).hasMessage("x.n must be an integer >= 8, found '7'");
        assertThatThrownBy(() -> OPTIONS.intAtLeast("x.path", 1, 1))
                .hasMessage("x.path must be an integer >= 1, found ' Scalar '");
        assertThatThrownBy(() -> OPTIONS.bool("x.n", false)).hasMessage("x.n must be true or false, found '7'");
    }
}
