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
        KernelArgs a = new KernelArgs().reset(Kernel.SOFTMAX_ROWS).ptr(new DevicePtr(0x7f0000001000L)).i32(-3)
                .f32(0.125f);
        assertThat(a.kernel()).isEqualTo(Kernel.SOFTMAX_ROWS);
        assertThat(a.count()).isEqualTo(3);
        assertThat(a.pointer(0)).isEqualTo(new DevicePtr(0x7f0000001000L));
        assertThat(a.intValue(1)).isEqualTo(-3);
        assertThat(a.floatValue(2)).isEqualTo(0.125f);
    }

    /** The one check of a launch's arguments: each kind as it is added, the count when the launch reads the kernel. */
    @Test
    void aWrongCountOrKindFailsNamingTheKernel() {
        KernelArgs a = new KernelArgs();
        DevicePtr p = new DevicePtr(1);
        assertThatThrownBy(() -> a.reset(Kernel.SOFTMAX_ROWS).ptr(p).i32(2).kernel())
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("softmax_rows(float* s")
                .hasMessageContaining("2 of its 3 arguments");
        assertThatThrownBy(() -> a.reset(Kernel.SOFTMAX_ROWS).ptr(p).f32(2))
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("argument 1 is FLOAT");
        assertThatThrownBy(() -> a.reset(Kernel.SOFTMAX_ROWS).ptr(p).i32(2).f32(3).i32(4))
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("more than 3 arguments");
        assertThatThrownBy(() -> new KernelArgs().i32(1)).isInstanceOf(IllegalStateException.class);
        assertThatThrownBy(() -> new KernelArgs().kernel()).isInstanceOf(IllegalStateException.class);
        // reset(kernel) makes the builder reusable
        assertThat(a.reset(Kernel.SOFTMAX_ROWS).ptr(p).i32(2).f32(3).kernel()).isEqualTo(Kernel.SOFTMAX_ROWS);
    }

    @Test
    void everyKernelFitsTheParameterBlock() {
        for (Kernel k : Kernel.values()) {
            assertThat(k.arity()).as(k.symbol).isLessThanOrEqualTo(KernelArgs.MAX_ARGS);
        }
    }
}
