package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

class KernelArgsTest {
    @Test
    void kindsComeFromTheCudaParameterList() {
        assertThat(Kernel.SOFTMAX_ROWS.arity()).isEqualTo(3);
        assertThat(Kernel.SOFTMAX_ROWS.kind(0)).isEqualTo(Kernel.ArgKind.POINTER);
        assertThat(Kernel.SOFTMAX_ROWS.kind(1)).isEqualTo(Kernel.ArgKind.INT);
        assertThat(Kernel.SOFTMAX_ROWS.kind(2)).isEqualTo(Kernel.ArgKind.FLOAT);
        assertThat(Kernel.CONDITION.kind(3)).isEqualTo(Kernel.ArgKind.POINTER); // const int* y
    }

    @Test
    void matchingArgumentsPassAndKeepTheirValues() {
        KernelArgs a = new KernelArgs().reset().ptr(0x7f0000001000L).i32(-3).f32(0.125f);
        a.check(Kernel.SOFTMAX_ROWS);
        assertThat(a.value(0)).isEqualTo(0x7f0000001000L);
        assertThat(a.intValue(1)).isEqualTo(-3);
        assertThat(a.floatValue(2)).isEqualTo(0.125f);
    }

    @Test
    void aWrongCountOrKindFailsNamingTheKernel() {
        KernelArgs a = new KernelArgs();
        assertThatThrownBy(() -> a.reset().ptr(1).i32(2).check(Kernel.SOFTMAX_ROWS))
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("softmax_rows(float* s");
        assertThatThrownBy(() -> a.reset().ptr(1).f32(2).f32(3).check(Kernel.SOFTMAX_ROWS))
                .isInstanceOf(IllegalStateException.class);
        // reset() makes the builder reusable
        a.reset().ptr(1).i32(2).f32(3).check(Kernel.SOFTMAX_ROWS);
    }
}
