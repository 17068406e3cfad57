package io.ditserve.backend.onnx;

import com.google.protobuf.ByteString;
import io.ditserve.backend.onnx.proto.OnnxModel.AttributeProto;
import io.ditserve.backend.onnx.proto.OnnxModel.GraphProto;
import io.ditserve.backend.onnx.proto.OnnxModel.ModelProto;
import io.ditserve.backend.onnx.proto.OnnxModel.NodeProto;
import io.ditserve.backend.onnx.proto.OnnxModel.OperatorSetIdProto;
import io.ditserve.backend.onnx.proto.OnnxModel.StringStringEntryProto;
import io.ditserve.backend.onnx.proto.OnnxModel.TensorProto;
import io.ditserve.backend.onnx.proto.OnnxModel.TensorShapeProto;
import io.ditserve.backend.onnx.proto.OnnxModel.TypeProto;
import io.ditserve.backend.onnx.proto.OnnxModel.ValueInfoProto;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * An ONNX graph under construction, as the protobuf messages of {@code onnx_model.proto}: typed inputs and outputs
 * (a dimension is a fixed size or a symbolic name such as {@code "N"}), initializers (small constants inline, weights
 * as external data into the checkpoint's own files), and nodes appended in topological order, each output named
 * after its node so that ONNX Runtime's messages point at the layer.
 *
 * <p>Opset {@value #OPSET} of the default domain: the first with LayerNormalization, and the last where
 * ReduceMean takes its axes as an attribute. IR version {@value #IR_VERSION} (ONNX 1.12) is old enough for every
 * ONNX Runtime that knows the opset.
 */
final class OnnxGraph {
    static final int OPSET = 17;
    static final int IR_VERSION = 8;

    /** TensorProto.DataType values used here. */
    static final int FLOAT = TensorProto.DataType.FLOAT_VALUE;
    static final int INT32 = TensorProto.DataType.INT32_VALUE;
    static final int INT64 = TensorProto.DataType.INT64_VALUE;
    static final int FLOAT16 = TensorProto.DataType.FLOAT16_VALUE;
    static final int BFLOAT16 = TensorProto.DataType.BFLOAT16_VALUE;
    static final int DOUBLE = TensorProto.DataType.DOUBLE_VALUE;

    private final GraphProto.Builder graph;
    private final Set<String> names = new HashSet<>();
    private int nodes;

    OnnxGraph(String name) {
        graph = GraphProto.newBuilder().setName(name);
    }

    /** A graph input; each dim an {@link Integer} (fixed) or a {@link String} (symbolic). Returns its name. */
    String input(String name, int elemType, Object... dims) {
        claim(name);
        graph.addInput(valueInfo(name, elemType, dims));
        return name;
    }

    /** Declares {@code value} (a value produced by a node) a graph output named {@code name}. */
    void output(String value, String name, int elemType, Object... dims) {
        claim(name);
        graph.addNode(NodeProto.newBuilder().setOpType("Identity").setName(name).addInput(value).addOutput(name));
        graph.addOutput(valueInfo(name, elemType, dims));
    }

    private static ValueInfoProto valueInfo(String name, int elemType, Object... dims) {
        TensorShapeProto.Builder shape = TensorShapeProto.newBuilder();
        for (Object d : dims) {
            TensorShapeProto.Dimension.Builder dim = TensorShapeProto.Dimension.newBuilder();
            switch (d) {
                case Integer i -> dim.setDimValue(i);
                case Long l -> dim.setDimValue(l);
                case String s -> dim.setDimParam(s);
                default -> throw new IllegalArgumentException("dimension " + d + " is neither a size nor a name");
            }
            shape.addDim(dim);
        }
        return ValueInfoProto.newBuilder().setName(name).setType(TypeProto.newBuilder().setTensorType(
                TypeProto.Tensor.newBuilder().setElemType(elemType).setShape(shape))).build();
    }

    /**
     * A weight whose bytes stay in a file of the model's folder: {@code [offset, offset + length)} of
     * {@code location} (a file name relative to the folder ONNX Runtime is told), {@code elemType} the stored one.
     */
    String external(String name, int elemType, long[] dims, String location, long offset, long length) {
        claim(name);
        TensorProto.Builder t = TensorProto.newBuilder().setName(name).setDataType(elemType)
                .setDataLocation(TensorProto.DataLocation.EXTERNAL)
                .addExternalData(entry("location", location))
                .addExternalData(entry("offset", Long.toString(offset)))
                .addExternalData(entry("length", Long.toString(length)));
        for (long d : dims) {
            t.addDims(d);
        }
        graph.addInitializer(t);
        return name;
    }

    private static StringStringEntryProto entry(String key, String value) {
        return StringStringEntryProto.newBuilder().setKey(key).setValue(value).build();
    }

    /** An inline float32 constant (structure, not weights: frequencies, masks, ones); returns its name. */
    String constant(String name, float[] values, long... dims) {
        ByteBuffer b = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(values);
        return inline(name, FLOAT, b.array(), dims);
    }

    /** An inline int64 constant (shapes, axes, indices); returns its name. */
    String constant(String name, long[] values, long... dims) {
        ByteBuffer b = ByteBuffer.allocate(8 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asLongBuffer().put(values);
        return inline(name, INT64, b.array(), dims);
    }

    /** A 1-D int64 constant with a generated name. */
    String longs(long... values) {
        return constant(fresh("const"), values, values.length);
    }

    /** An inline constant named {@code label}, or {@code label_k} where that is taken; returns the name. */
    private String inline(String label, int elemType, byte[] raw, long... dims) {
        String name = fresh(label);
        TensorProto.Builder t = TensorProto.newBuilder().setName(name).setDataType(elemType)
                .setRawData(ByteString.copyFrom(raw));
        for (long d : dims) {
            t.addDims(d);
        }
        graph.addInitializer(t);
        return name;
    }

    /** An attribute of a node. */
    record Attr(AttributeProto proto) {
        static Attr of(String name, long value) {
            return new Attr(AttributeProto.newBuilder().setName(name).setType(AttributeProto.AttributeType.INT)
                    .setI(value).build());
        }

        static Attr of(String name, float value) {
            return new Attr(AttributeProto.newBuilder().setName(name).setType(AttributeProto.AttributeType.FLOAT)
                    .setF(value).build());
        }

        static Attr str(String name, String value) {
            return new Attr(AttributeProto.newBuilder().setName(name).setType(AttributeProto.AttributeType.STRING)
                    .setS(ByteString.copyFromUtf8(value)).build());
        }

        static Attr ints(String name, long... values) {
            AttributeProto.Builder a = AttributeProto.newBuilder().setName(name)
                    .setType(AttributeProto.AttributeType.INTS);
            for (long v : values) {
                a.addInts(v);
            }
            return new Attr(a.build());
        }
    }

    /** Appends {@code op(inputs)} with one output, named {@code label} (made unique); returns the output. */
    String node(String op, String label, List<String> inputs, Attr... attrs) {
        return node(op, label, 1, inputs, attrs)[0];
    }

    /** Appends {@code op(inputs)} with {@code outputs} outputs ({@code label:0}, {@code label:1}, ...). */
    String[] node(String op, String label, int outputs, List<String> inputs, Attr... attrs) {
        String name = fresh(label);
        NodeProto.Builder n = NodeProto.newBuilder().setOpType(op).setName(name).addAllInput(inputs);
        String[] outs = new String[outputs];
        for (int i = 0; i < outputs; i++) {
            outs[i] = outputs == 1 ? name : name + ":" + i;
            n.addOutput(outs[i]);
        }
        for (Attr a : attrs) {
            n.addAttribute(a.proto());
        }
        graph.addNode(n);
        nodes++;
        return outs;
    }

    /** {@code label}, or {@code label_k} for the first k that is not yet taken. */
    private String fresh(String label) {
        String name = label;
        for (int k = 1; names.contains(name); k++) {
            name = label + "_" + k;
        }
        names.add(name);
        return name;
    }

    private void claim(String name) {
        if (!names.add(name)) {
            throw new IllegalArgumentException("the graph already has a value named '" + name + "'");
        }
    }

    int nodeCount() {
        return nodes;
    }

    /** The model: this graph, opset {@value #OPSET} of the default domain. */
    byte[] toBytes(String producer) {
        return ModelProto.newBuilder().setIrVersion(IR_VERSION).setProducerName(producer)
                .addOpsetImport(OperatorSetIdProto.newBuilder().setDomain("").setVersion(OPSET))
                .setGraph(graph).build().toByteArray();
    }
}
