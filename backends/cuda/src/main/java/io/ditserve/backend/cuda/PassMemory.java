package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.function.ToLongFunction;

/**
 * What a loaded model holds on its device between calls, for {@link CudaDitBackend}, {@link CudaMmditBackend},
 * {@link CudaTextEncoder} and {@link CudaDecoder}: the {@link Device}, the one device allocation that holds a pass's
 * activations as a layout {@code L} places them ({@link ActivationLayout}, {@link MmditBuffers}, {@link TextBuffers},
 * {@link DecoderBuffers}), and the host staging segments that the pass's copies go through ({@link #stage}, sized
 * from the layout). {@link #regrow} replaces the allocation and the staging in one call when a pass needs more than
 * the current layout holds; {@link #close} releases the device, its memory with it. Not thread-safe: the backends
 * call it under their own lock.
 *
 * @param <L> the activation layout
 */
final class PassMemory<L extends PassMemory.Layout> implements AutoCloseable {
    /** What this class needs of an activation layout. */
    interface Layout {
        /** Bytes of the device allocation that holds every buffer of the layout. */
        long totalBytes();
    }

    /** Queued work of a pass that returns nothing. */
    interface Queued {
        void queue() throws BackendException;
    }

    /** Queued work of a pass that returns where its result is. */
    interface Work<T> {
        T queue() throws BackendException;
    }

    /** A host staging segment of a number of 4-byte elements that depends on the layout, remade by each regrow. */
    static final class Stage<L> {
        private final ToLongFunction<L> floats;
        private MemorySegment segment;

        private Stage(ToLongFunction<L> floats) {
            this.floats = floats;
        }

        /** The segment for the current layout (64-byte aligned); null before the first {@link PassMemory#regrow}. */
        MemorySegment segment() {
            return segment;
        }
    }

    private final Device device;
    private final String beforeGrowing; // what synchronize waits for, for its error message
    private final String afterCancel;
    private final List<Stage<L>> stages = new ArrayList<>();
    private L layout;
    private DevicePtr base;
    private Arena arena;
    private boolean closed;

    /** {@code pass}: what one call queues ("forward pass", "encode", "decode"), for the error messages. */
    PassMemory(Device device, String pass) {
        this.device = device;
        this.beforeGrowing = "the previous " + pass + ", before growing the buffers";
        this.afterCancel = "a cancelled " + pass;
    }

    Device device() {
        return device;
    }

    /**
     * Declares a staging segment of {@code floats(layout)} 4-byte elements, made at each {@link #regrow}; declared
     * before the first one.
     */
    Stage<L> stage(ToLongFunction<L> floats) {
        if (layout != null) {
            throw new IllegalStateException("staging declared after the buffers were allocated");
        }
        Stage<L> s = new Stage<>(floats);
        stages.add(s);
        return s;
    }

    /** The current layout; null before the first {@link #regrow}. */
    L layout() {
        return layout;
    }

    /** The device address of the activation allocation. */
    DevicePtr base() {
        return base;
    }

    /**
     * Replaces the activations and the staging with those of {@code next}: waits for the previous pass, which may
     * still use them, frees them, then allocates the new ones; {@code what} says what the device memory is for, for
     * the out-of-memory message.
     */
    void regrow(L next, String what) throws BackendException {
        if (layout != null) {
            device.synchronize(beforeGrowing);
            device.free(base);
            layout = null;
            arena.close();
            arena = null;
        }
        base = device.alloc(next.totalBytes(), what);
        arena = Arena.ofShared();
        for (Stage<L> s : stages) {
            // a segment even for an empty buffer (T5 has no pooled output)
            s.segment = arena.allocate(Math.max(1, DevicePtr.floatBytes(s.floats.applyAsLong(next))), 64);
        }
        layout = next;
    }

    /**
     * Runs {@code work}, which queues a pass; when the pass is cancelled part-way, waits for what it queued before
     * rethrowing, so that no queued copy still reads or writes the staging memory.
     */
    void queue(Queued work) throws BackendException {
        queue(() -> {
            work.queue();
            return null;
        });
    }

    /** As {@link #queue(Queued)} for work that returns where its result is. */
    <T> T queue(Work<T> work) throws BackendException {
        try {
            return work.queue();
        } catch (BackendException.Cancelled c) {
            device.synchronize(afterCancel);
            throw c;
        }
    }

    /** Whether {@link #close} ran. */
    boolean closed() {
        return closed;
    }

    /** Releases the device (and with it every allocation) and the staging memory. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        device.close();
        if (arena != null) {
            arena.close();
        }
    }
}
