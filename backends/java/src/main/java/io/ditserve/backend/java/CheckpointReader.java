package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DitCheckpoint;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.MmditCheckpoint.Located;
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
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Reads the tensors of a checkpoint one at a time, for a loader that converts each into its own layout and keeps
 * only that: the process then holds one copy of the weights, never the file as well. A DiT's
 * {@code weights.safetensors} ({@link #open}), or an MMDiT's diffusers weights, one file or shards
 * ({@link #openMmdit}).
 *
 * <p>The headers are validated against the spec first ({@link DitCheckpoint#validate},
 * {@link MmditCheckpoint#validate}, through {@link Safetensors}, which maps a file but is closed again without
 * touching the data). The data is then read with positional reads
 * through a {@link FileChannel} into one native buffer sized for the largest tensor, and converted from there;
 * read, not mapped, because pages of a mapping count as the process's resident memory until it is unmapped, and a
 * mapping of a 2.7 GB checkpoint next to its packed copy doubled the resident size of a DiT-XL/2 server.
 *
 * <p>F16 and BF16 tensors are either decoded to float32 ({@link #floats}, {@link #scratch}) or, for a loader that
 * keeps them in 16 bits ({@link Panels}), handed over as their stored bytes ({@link #half}, {@link #bytes}); the
 * reader's {@code keep16} says which (the backends' {@code java.weights} option, {@link JavaDitBackend#keep16}).
 */
final class CheckpointReader implements AutoCloseable {
    private final Path file;
    private final Map<String, Located> tensors;
    private final Map<Path, FileChannel> channels;
    private boolean keep16 = true;
    private final Arena arena = Arena.ofConfined();
    private MemorySegment buffer = MemorySegment.NULL;
    private float[] scratch = new float[0];
    private long bytesRead;

    private CheckpointReader(Path file, Map<String, Located> tensors, Map<Path, FileChannel> channels) {
        this.file = file;
        this.tensors = tensors;
        this.channels = channels;
    }

    /** Validates {@code file} against {@code spec} (names, shapes, dtypes, offsets) and opens it for reading. */
    static CheckpointReader open(ModelSpec spec, Path file) throws BackendException {
        Map<String, Located> tensors = new LinkedHashMap<>();
        try (Safetensors st = Safetensors.open(file)) {
            DitCheckpoint.validate(st, spec);
            st.entries().forEach((name, e) -> tensors.put(name, new Located(file, e)));
        }
        return open(file, tensors);
    }

    /**
     * Validates the diffusers weights of the MMDiT folder {@code spec.directory()} (one file or shards with their
     * index) against {@code spec} and opens every file for reading.
     */
    static CheckpointReader openMmdit(ModelSpec spec) throws BackendException {
        return open(spec.directory(), MmditCheckpoint.open(spec));
    }

    /**
     * Opens already validated tensors ({@code tensors}: name → file and header entry) for reading; {@code where}
     * names the checkpoint in messages: its file, or the folder of its shards.
     */
    static CheckpointReader open(Path where, Map<String, Located> tensors) throws BackendException {
        Map<Path, FileChannel> channels = new HashMap<>();
        try {
            for (Located t : tensors.values()) {
                if (!channels.containsKey(t.file())) {
                    channels.put(t.file(), FileChannel.open(t.file(), StandardOpenOption.READ));
                }
            }
            return new CheckpointReader(where, tensors, channels);
        } catch (IOException e) {
            closeAll(channels);
            throw new BackendException(e instanceof NoSuchFileException ? e.getMessage() + ": missing"
                    : where + ": cannot read: " + e.getMessage(), e);
        }
    }

    /**
     * Whether {@link #half} offers F16/BF16 tensors in 16 bits (true, the default) or says null for every tensor,
     * so that loaders decode everything to float32 at load (the path before 16-bit weights, kept for comparison).
     */
    CheckpointReader keep16(boolean keep) {
        this.keep16 = keep;
        return this;
    }

    /** The 16-bit format of tensor {@code name} when it is F16/BF16 and 16-bit weights are kept, else null. */
    Half half(String name) throws BackendException {
        return keep16 ? Half.of(tensor(name).entry().dtype()) : null;
    }

    /**
     * The stored bytes of tensor {@code name} (little-endian, row-major) in the reader's native buffer: valid until
     * the next read, for a caller that packs them at once.
     */
    MemorySegment bytes(String name) throws BackendException {
        Located t = tensor(name);
        return load(t);
    }

    /** Bytes of tensor data read so far. */
    long bytesRead() {
        return bytesRead;
    }

    /** A floating-point tensor as a new float32 array of exactly its size. */
    float[] floats(String name) throws BackendException {
        Located t = tensor(name);
        float[] out = new float[Math.toIntExact(t.entry().numel())];
        read(t, out);
        return out;
    }

    /**
     * A floating-point tensor in the reader's scratch array, which may be longer than the tensor: valid until the
     * next call, for a caller that converts it at once (packing). The array is reused, so reading every weight
     * this way allocates (and first-touches) memory for the largest tensor only.
     */
    float[] scratch(String name) throws BackendException {
        Located t = tensor(name);
        if (scratch.length < t.entry().numel()) {
            scratch = new float[Math.toIntExact(t.entry().numel())];
        }
        read(t, scratch);
        return scratch;
    }

    private Located tensor(String name) throws BackendException {
        Located t = tensors.get(name);
        if (t == null) {
            throw new BackendException(file + ": tensor '" + name + "' is missing");
        }
        return t;
    }

    private void read(Located t, float[] out) throws BackendException {
        MemorySegment data = load(t);
        Safetensors.decodeFloats(t.file(), t.entry(), data, out);
    }

    /** Reads tensor t's bytes into the buffer (grown as needed) and returns them. */
    private MemorySegment load(Located t) throws BackendException {
        Entry e = t.entry();
        Path file = t.file();
        FileChannel channel = channels.get(file);
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
        bytesRead += e.byteLength();
        return buffer.asSlice(0, e.byteLength());
    }

    /** Closes the files and frees the read buffer. */
    @Override
    public void close() {
        closeAll(channels);
        if (arena.scope().isAlive()) {
            arena.close();
        }
    }

    private static void closeAll(Map<Path, FileChannel> channels) {
        for (FileChannel ch : channels.values()) {
            try {
                ch.close();
            } catch (IOException e) {
                // read-only: nothing is lost
            }
        }
    }
}
