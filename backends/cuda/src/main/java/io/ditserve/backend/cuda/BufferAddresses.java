package io.ditserve.backend.cuda;

import java.util.function.ToLongFunction;

/**
 * The device addresses of a pass's activation buffers ({@code B}: a layout's buffer names): a buffer's element
 * offset in the layout ({@code offsets}, e.g. {@link ActivationLayout#offset}) from the allocation at {@code base}.
 */
record BufferAddresses<B>(ToLongFunction<B> offsets, DevicePtr base) {
    DevicePtr at(B buffer) {
        return base.plusFloats(offsets.applyAsLong(buffer));
    }
}
