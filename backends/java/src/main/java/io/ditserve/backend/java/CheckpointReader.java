package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DitCheckpoint;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Safetensors.Entry;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Map;

/**
 * Reads the tensors of a DiT {@code weights.safetensors} one at a time, for a loader that converts each into its
 * own layout and keeps only that: the process then holds one copy of the weights, never the file as well.
 *
 * <p>The header is validated against the spec first ({@link DitCheckpoint#validate}, through {@link Safetensors},
 * which maps the file but is closed again without touching the data). The data is then read with positional reads
 * through a {@link FileChannel} into one native buffer sized for the largest tensor, and converted from there;
 * read, not mapped, because pages of a mapping count as the process's resident memory until it is unmapped, and a
 * mapping of a 2.7 GB checkpoint next to its packed copy doubled the resident size of a DiT-XL/2 server.
 */
final class CheckpointReader implements AutoCloseable {
    private final Path file;
    private final Map<String, Entry> entries;
    private final FileChannel channel;
    private final Arena arena = Arena.ofConfined();
    private MemorySegment buffer = MemorySegment.NULL;
    private float[] scratch = new float[0];
    private long bytesRead;

    private CheckpointReader(Path file, Map<String, Entry> entries, FileChannel channel) {
        this.file = file;
        this.entries = entries;
        this.channel = channel;
    }

    /** Validates {@code file} against {@code spec} (names, shapes, dtypes, offsets) and opens it for reading. */
    static CheckpointReader open(ModelSpec spec, Path file) throws BackendException {
        Map<String, Entry> entries;
        try (Safetensors st = Safetensors.open(file)) {
            DitCheckpoint.validate(st, spec);
            entries = st.entries();
        }
        try {
            return new CheckpointReader(file, entries, FileChannel.open(file, StandardOpenOption.READ));
        } catch (NoSuchFileException e) {
            throw new BackendException(file + ": missing");
        } catch (IOException e) {
            throw new BackendException(file + ": cannot read: " + e.getMessage(), e);
        }
    }

    Path file() {
        return file;
    }

    /** Bytes of tensor data read so far. */
    long bytesRead() {
        return bytesRead;
    }

    /** A floating-point tensor as a new float32 array of exactly its size. */
    float[] floats(String name) throws BackendException {
        Entry e = entry(name);
        float[] out = new float[Math.toIntExact(e.numel())];
        read(e, out);
        return out;
    }

    /**
     * A floating-point tensor in the reader's scratch array, which may be longer than the tensor: valid until the
     * next call, for a caller that converts it at once (packing). The array is reused, so reading every weight
     * this way allocates (and first-touches) memory for the largest tensor only.
     */
    float[] scratch(String name) throws BackendException {
        Entry e = entry(name);
        if (scratch.length < e.numel()) {
            scratch = new float[Math.toIntExact(e.numel())];
        }
        read(e, scratch);
        return scratch;
    }

    private Entry entry(String name) throws BackendException {
        Entry e = entries.get(name);
        if (e == null) {
            throw new BackendException(file + ": tensor '" + name + "' is missing");
        }
        return e;
    }

    private void read(Entry e, float[] out) throws BackendException {
        if (buffer.byteSize() < e.byteLength()) {
            buffer = arena.allocate(Math.max(e.byteLength(), 2 * buffer.byteSize()), 64);
        }
        ByteBuffer bb = buffer.asSlice(0, e.byteLength()).asByteBuffer();
        try {
            while (bb.hasRemaining()) {
                int n = channel.read(bb, e.offset() + bb.position());
                if (n < 0) {
                    throw new BackendException(file + ": tensor '" + e.name() + "': the file ends at "
                            + (e.offset() + bb.position()) + " bytes, before its data does (truncated while loading?)");
                }
            }
        } catch (IOException ex) {
            throw new BackendException(file + ": cannot read tensor '" + e.name() + "': " + ex.getMessage(), ex);
        }
        Safetensors.decodeFloats(file, e, buffer.asSlice(0, e.byteLength()), out);
        bytesRead += e.byteLength();
    }

    /** Closes the file and frees the read buffer. */
    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException e) {
            // read-only: nothing is lost
        } finally {
            if (arena.scope().isAlive()) {
                arena.close();
            }
        }
    }
}
