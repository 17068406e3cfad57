package io.ditserve.backend.cuda;

/**
 * A device address (a {@code CUdeviceptr}): a BYTE address in the GPU's memory, as {@code cuMemAlloc} returns it and
 * the kernels and cuBLAS take it. The layouts ({@link WeightLayout}, {@link ActivationLayout}, {@link DecoderBuffers},
 * {@link DecoderWeights}) count in 4-byte elements (float32, or int32 for the timesteps and labels) and
 * {@link GemmCall} strides in elements too; {@link #plusFloats} is the one place where an element count becomes a
 * byte offset, so element counts and byte addresses cannot be mixed by accident.
 *
 * <p>Device memory is not host memory, so a {@link java.lang.foreign.MemorySegment} cannot describe it; the native
 * bindings pass {@link #address} as a 64-bit integer (on the 64-bit ABIs CUDA supports, a pointer and a 64-bit
 * integer travel the same way).
 */
record DevicePtr(long address) {
    /** Bytes of one element: a float32 (or an int32). */
    static final int ELEMENT_BYTES = Float.BYTES;

    /** The address {@code bytes} further on. */
    DevicePtr plusBytes(long bytes) {
        return new DevicePtr(address + bytes);
    }

    /** The address {@code elements} 4-byte elements further on. */
    DevicePtr plusFloats(long elements) {
        return new DevicePtr(address + floatBytes(elements));
    }

    /** Bytes of {@code elements} 4-byte elements (an allocation's or a copy's size). */
    static long floatBytes(long elements) {
        return Math.multiplyExact(elements, (long) ELEMENT_BYTES);
    }

    /** Bytes from {@code base} to this address. */
    long bytesFrom(DevicePtr base) {
        return address - base.address;
    }

    @Override
    public String toString() {
        return "0x" + Long.toHexString(address);
    }
}
