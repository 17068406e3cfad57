package io.ditserve.backend.onnx;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Safetensors;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * The checkpoint tensors of one folder as initializers of a graph under construction, without copying them: each is
 * an external-data reference into the safetensors file that holds it (the file's name relative to the folder, the
 * tensor's absolute byte offset and length in it), in its stored dtype. A 16-bit or float64 weight gets one Cast to
 * float32 in the graph, shared by every node that reads it; the arithmetic is float32 throughout, as on the java
 * backend.
 *
 * <p>Every file must lie in the folder itself (ONNX Runtime resolves locations relative to the folder it is given and
 * refuses paths that leave it); the checkpoint readers already require that of shards.
 */
final class GraphWeights {
    /** A tensor of the folder: the file that holds it and its header entry there. */
    record Stored(Path file, Safetensors.Entry entry) {}

    private final OnnxGraph g;
    private final Path folder;
    private final Map<String, Stored> tensors;
    private final Map<String, String> asFloat = new HashMap<>();
    private final Map<String, Long> bytesByFile = new java.util.LinkedHashMap<>();
    private int externalTensors;

    GraphWeights(OnnxGraph g, Path folder, Map<String, Stored> tensors) {
        this.g = g;
        this.folder = folder.toAbsolutePath().normalize();
        this.tensors = tensors;
    }

    /** The folder ONNX Runtime must resolve the locations against. */
    Path folder() {
        return folder;
    }

    Stored stored(String name) throws BackendException {
        Stored s = tensors.get(name);
        if (s == null) {
            throw new BackendException(folder + ": tensor '" + name + "' is missing");
        }
        return s;
    }

    /** Tensor {@code name} as a float32 value of the graph (its initializer, cast where it is stored otherwise). */
    String f32(String name) throws BackendException {
        String v = asFloat.get(name);
        if (v != null) {
            return v;
        }
        Stored s = stored(name);
        Path file = s.file().toAbsolutePath().normalize();
        if (!folder.equals(file.getParent())) {
            throw new BackendException(file + ": tensor '" + name + "' must be in the folder " + folder
                    + " to be read as external data");
        }
        int type = switch (s.entry().dtype()) {
            case "F32" -> OnnxGraph.FLOAT;
            case "F16" -> OnnxGraph.FLOAT16;
            case "BF16" -> OnnxGraph.BFLOAT16;
            case "F64" -> OnnxGraph.DOUBLE;
            default -> throw new BackendException(file + ": tensor '" + name + "' is " + s.entry().dtype()
                    + "; weights must be F32, F16 or BF16");
        };
        String init = g.external(name, type, s.entry().shape(), file.getFileName().toString(), s.entry().offset(),
                s.entry().byteLength());
        bytesByFile.merge(file.getFileName().toString(), s.entry().byteLength(), Long::sum);
        externalTensors++;
        v = type == OnnxGraph.FLOAT ? init
                : g.node("Cast", name + ".f32", java.util.List.of(init), OnnxGraph.Attr.of("to", OnnxGraph.FLOAT));
        asFloat.put(name, v);
        return v;
    }

    /** The files the graph reads and how much of each, for messages. */
    ExternalData.Summary summary() {
        return new ExternalData.Summary(java.util.Collections.unmodifiableMap(new java.util.LinkedHashMap<>(bytesByFile)),
                externalTensors);
    }
}
