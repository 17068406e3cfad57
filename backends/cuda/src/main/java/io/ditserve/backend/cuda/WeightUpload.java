package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Safetensors;
import java.lang.foreign.Arena;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

/**
 * Fills the one device allocation that holds a model's weights, for {@link CudaDitBackend}, {@link CudaMmditBackend},
 * {@link CudaTextEncoder} and {@link CudaDecoder}; their layouts ({@link WeightLayout}, {@link MmditWeights},
 * {@link TextWeights}, {@link DecoderWeights}) say which tensor goes to which element offset, this class how it gets
 * there. A float32 tensor is copied straight from the mapped file, one of another dtype is decoded to float32 first
 * ({@link Safetensors#floats}); values the host computes (the timestep frequencies, a cropped or derived table) are
 * copied from a {@code float[]} through a confined arena freed at once. Every copy is synchronous
 * ({@link Device#copyToDevice}) and names what it copies for the error message. A checkpoint spread over several
 * files ({@link #file}) has each file opened once per upload; {@link #close} closes them.
 */
final class WeightUpload implements AutoCloseable {
    private final Device device;
    private final DevicePtr base;
    private final Map<Path, Safetensors> files = new HashMap<>();

    /** Allocates {@code floats} elements on {@code device}; {@code what} says whose weights they are. */
    WeightUpload(Device device, long floats, String what) throws BackendException {
        this.device = device;
        this.base = device.alloc(DevicePtr.floatBytes(floats), what);
    }

    /** The device address of the allocation. */
    DevicePtr base() {
        return base;
    }

    /** {@code file}, opened at its first use in this upload and kept open until {@link #close}. */
    Safetensors file(Path file) throws BackendException {
        Safetensors st = files.get(file);
        if (st == null) {
            st = Safetensors.open(file);
            files.put(file, st);
        }
        return st;
    }

    /** As {@link #tensor(long, long, Safetensors, String)} for a tensor of {@code file} ({@link #file}). */
    void tensor(long offset, long length, Path file, String name) throws BackendException {
        tensor(offset, length, file(file), name);
    }

    /**
     * Copies the first {@code length} values of tensor {@code name} of {@code st}, as float32, to elements
     * {@code offset ..} of the allocation (a tensor may be longer than its slot: CLIP's position table keeps only
     * its first rows).
     */
    void tensor(long offset, long length, Safetensors st, String name) throws BackendException {
        if (st.entry(name).dtype().equals("F32")) {
            // the mapped file is little-endian float32 already, as the GPU wants it
            device.copyToDevice(base.plusFloats(offset), st.segment(name), DevicePtr.floatBytes(length), name);
        } else {
            float[] values = st.floats(name);
            values(offset, values.length == length ? values : Arrays.copyOf(values, Math.toIntExact(length)), name);
        }
    }

    /** Copies {@code values} to elements {@code offset ..} of the allocation; {@code what} names them. */
    void values(long offset, float[] values, String what) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            device.copyToDevice(base.plusFloats(offset), a.allocateFrom(JAVA_FLOAT, values),
                    DevicePtr.floatBytes(values.length), what);
        }
    }

    /** Closes the files {@link #file} opened; the device memory stays, the model's until its device closes. */
    @Override
    public void close() {
        files.values().forEach(Safetensors::close);
    }
}
