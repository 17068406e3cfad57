package io.ditserve.backend.onnx;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * Writes tiny one-node ONNX models with a chosen signature, so that the contract checks
 * run against real files that ONNX Runtime loads. The protobuf is encoded by hand (a few fields of onnx.proto's
 * ModelProto), which keeps the onnx and protobuf libraries out of the build.
 */
final class OnnxModelWriter {
    /** onnx.proto TensorProto.DataType values. */
    static final int FLOAT = 1;
    static final int INT64 = 7;
    static final int DOUBLE = 11;

    private OnnxModelWriter() {}

    /**
     * A graph input or output. Each dim is an {@link Integer} (fixed size) or a {@link String} (symbolic, e.g. "N").
     */
    record Value(String name, int elemType, Object... dims) {}

    /** A model whose only node copies the first input to the first output. */
    static byte[] identity(List<Value> inputs, List<Value> outputs) {
        return model(inputs, outputs, "Identity", new Proto());
    }

    /** A model whose only node writes the first input twice along the channels: [N, C, H, W] → [N, 2C, H, W]. */
    static byte[] doubledChannels(List<Value> inputs, List<Value> outputs) {
        Proto axis = new Proto()
                .string(1, "axis")  // AttributeProto.name
                .varint(3, 1)       // AttributeProto.i
                .varint(20, 2);     // AttributeProto.type = INT
        String x = inputs.getFirst().name();
        return model(inputs, outputs, "Concat", new Proto().string(1, x).message(5, axis)); // 2nd input, attribute
    }

    /** {@code out = op(first input, ...)}; {@code more} adds node fields after the first input. */
    private static byte[] model(List<Value> inputs, List<Value> outputs, String op, Proto more) {
        Proto node = new Proto()
                .string(1, inputs.getFirst().name())   // NodeProto.input
                .append(more)
                .string(2, outputs.getFirst().name())  // NodeProto.output
                .string(3, "node")                     // NodeProto.name
                .string(4, op);                        // NodeProto.op_type
        Proto graph = new Proto().message(1, node).string(2, "contract-test"); // GraphProto.node, .name
        inputs.forEach(v -> graph.message(11, valueInfo(v)));                 // GraphProto.input
        outputs.forEach(v -> graph.message(12, valueInfo(v)));                // GraphProto.output
        return new Proto()
                .varint(1, 8)                               // ModelProto.ir_version
                .string(2, "ditserve-test")                 // ModelProto.producer_name
                .message(7, graph)                          // ModelProto.graph
                .message(8, new Proto().varint(2, 14))      // ModelProto.opset_import: default domain, opset 14
                .bytes();
    }

    private static Proto valueInfo(Value v) {
        Proto shape = new Proto();
        for (Object d : v.dims()) {
            // TensorShapeProto.dim: Dimension.dim_value (1) or Dimension.dim_param (2)
            shape.message(1, d instanceof String s ? new Proto().string(2, s) : new Proto().varint(1, (Integer) d));
        }
        Proto tensorType = new Proto().varint(1, v.elemType()).message(2, shape); // TypeProto.Tensor
        return new Proto().string(1, v.name()).message(2, new Proto().message(1, tensorType)); // ValueInfoProto
    }

    /** A protobuf message being encoded: varint and length-delimited fields only. */
    private static final class Proto {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Proto varint(int field, long value) {
            writeVarint((long) field << 3);
            writeVarint(value);
            return this;
        }

        Proto string(int field, String value) {
            return bytes(field, value.getBytes(StandardCharsets.UTF_8));
        }

        Proto message(int field, Proto value) {
            return bytes(field, value.bytes());
        }

        private Proto bytes(int field, byte[] value) {
            writeVarint((long) field << 3 | 2);
            writeVarint(value.length);
            out.writeBytes(value);
            return this;
        }

        /** Appends the fields of another message (protobuf fields may come in any order). */
        Proto append(Proto fields) {
            out.writeBytes(fields.bytes());
            return this;
        }

        byte[] bytes() {
            return out.toByteArray();
        }

        private void writeVarint(long v) {
            while ((v & ~0x7FL) != 0) {
                out.write((int) (v & 0x7F) | 0x80);
                v >>>= 7;
            }
            out.write((int) v);
        }
    }
}
