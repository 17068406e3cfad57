package io.ditserve.backend.onnx;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.onnx.OnnxGraph.Attr;
import java.util.List;

/**
 * The layers the transformer and text-encoder graphs are made of, as ONNX nodes (opset {@value OnnxGraph#OPSET}):
 * linear layers (MatMul with the transposed weight, then the bias), LayerNorm, RMSNorm, the activations written out
 * from elementwise ops, and multi-head attention from MatMul and Softmax. Each method appends its nodes to the graph
 * and returns the name of the result; labels become node names, so a failing node names its layer.
 *
 * <p>Activations are [N, tokens, width] with a symbolic batch (and, for the MMDiT context, token) dimension; reshapes
 * use ONNX's 0 (copy this dimension) so the same graph serves every batch size.
 */
final class GraphOps {
    private static final long LAST = Long.MAX_VALUE; // a Slice end meaning "to the end"

    final OnnxGraph g;
    final GraphWeights w;

    GraphOps(OnnxGraph g, GraphWeights w) {
        this.g = g;
        this.w = w;
    }

    String op(String op, String label, String... inputs) {
        return g.node(op, label, List.of(inputs));
    }

    String op(String op, String label, List<String> inputs, Attr... attrs) {
        return g.node(op, label, inputs, attrs);
    }

    String add(String label, String a, String b) {
        return op("Add", label, a, b);
    }

    String mul(String label, String a, String b) {
        return op("Mul", label, a, b);
    }

    /** A float32 scalar constant. */
    String scalar(String label, float v) {
        return g.constant(label, new float[] {v});
    }

    /**
     * {@code x·Wᵀ + b} over the last axis of x, W = {@code prefix.weight} [out, in] and b = {@code prefix.bias} (none
     * when {@code bias} is false). The transpose of a constant is folded by ONNX Runtime when it optimises the graph.
     */
    String linear(String x, String prefix, boolean bias) throws BackendException {
        String wt = op("Transpose", prefix + ".weight.T", List.of(w.f32(prefix + ".weight")), Attr.ints("perm", 1, 0));
        String y = op("MatMul", prefix, x, wt);
        return bias ? add(prefix + ".bias_add", y, w.f32(prefix + ".bias")) : y;
    }

    String linear(String x, String prefix) throws BackendException {
        return linear(x, prefix, true);
    }

    String sigmoid(String label, String x) {
        return op("Sigmoid", label, x);
    }

    /** x·σ(x). */
    String silu(String label, String x) {
        return mul(label, x, sigmoid(label + ".sigmoid", x));
    }

    /**
     * GELU, tanh approximation (diffusers' GELU(approximate="tanh"), transformers' gelu_new and
     * gelu_pytorch_tanh), in the sigmoid form the MMDiT reference writes: 0.5·(1 + tanh(z)) = σ(2z), so
     * x·σ(x·(2·√(2/π) + 2·√(2/π)·0.044715·x²)).
     */
    String geluTanh(String label, String x) {
        double c = Math.sqrt(2.0 / Math.PI);
        String x2 = mul(label + ".x2", x, x);
        String inner = add(label + ".inner", scalar(label + ".c1", (float) (2 * c)),
                mul(label + ".c2x2", x2, scalar(label + ".c2", (float) (2 * c * 0.044715))));
        return mul(label, x, sigmoid(label + ".sigmoid", mul(label + ".z", x, inner)));
    }

    /** CLIP's quick_gelu: x·σ(1.702·x). */
    String quickGelu(String label, String x) {
        return mul(label, x, sigmoid(label + ".sigmoid", mul(label + ".z", x, scalar(label + ".k", 1.702f))));
    }

    /** The exact GELU: 0.5·x·(1 + erf(x/√2)). */
    String geluErf(String label, String x) {
        String erf = op("Erf", label + ".erf", mul(label + ".z", x, scalar(label + ".k", (float) (1 / Math.sqrt(2)))));
        String half = mul(label + ".half", x, scalar(label + ".h", 0.5f));
        return mul(label, half, add(label + ".one", erf, scalar(label + ".1", 1f)));
    }

    /** LayerNorm over the last axis with {@code weight} and {@code bias} values (float32, [width]). */
    String layerNorm(String label, String x, String weight, String bias, double eps) {
        return g.node("LayerNormalization", label, bias == null ? List.of(x, weight) : List.of(x, weight, bias),
                Attr.of("axis", -1L), Attr.of("epsilon", (float) eps));
    }

    /** RMSNorm over the last axis: x·(1/√(mean(x²) + eps))·weight. */
    String rmsNorm(String label, String x, String weight, double eps) {
        String ms = op("ReduceMean", label + ".mean_square", List.of(mul(label + ".square", x, x)),
                Attr.ints("axes", -1), Attr.of("keepdims", 1L));
        String rms = op("Sqrt", label + ".rms", add(label + ".eps_add", ms, scalar(label + ".eps", (float) eps)));
        return mul(label, op("Div", label + ".normed", x, rms), weight);
    }

    /** [N, T, heads·hd] → [N, heads, T, hd]. */
    String splitHeads(String label, String x, int heads, int headDim) {
        String r = op("Reshape", label + ".heads", x, g.longs(0, 0, heads, headDim));
        return op("Transpose", label, List.of(r), Attr.ints("perm", 0, 2, 1, 3));
    }

    /** [N, heads, T, hd] → [N, T, heads·hd]. */
    String mergeHeads(String label, String x, int width) {
        String t = op("Transpose", label + ".tokens", List.of(x), Attr.ints("perm", 0, 2, 1, 3));
        return op("Reshape", label, t, g.longs(0, 0, width));
    }

    /**
     * softmax(q·kᵀ·scale + bias)·v on [N, heads, T, hd] (bias broadcast onto [N, heads, Tq, Tk], or null; scale 1
     * leaves the product as it is).
     */
    String attention(String label, String q, String k, String v, float scale, String bias) {
        String kt = op("Transpose", label + ".kT", List.of(k), Attr.ints("perm", 0, 1, 3, 2));
        String s = op("MatMul", label + ".scores", q, kt);
        if (scale != 1f) {
            s = mul(label + ".scaled", s, scalar(label + ".scale", scale));
        }
        if (bias != null) {
            s = add(label + ".biased", s, bias);
        }
        String p = op("Softmax", label + ".softmax", List.of(s), Attr.of("axis", -1L));
        return op("MatMul", label, p, v);
    }

    /** x[..., from:to, ...] along {@code axis} (to = {@link #LAST} for the rest). */
    String slice(String label, String x, long axis, long from, long to) {
        return op("Slice", label, x, g.longs(from), g.longs(to), g.longs(axis));
    }

    String sliceToEnd(String label, String x, long axis, long from) {
        return slice(label, x, axis, from, LAST);
    }

    /** Splits the last axis of x into {@code parts} equal chunks of {@code width}. */
    String[] split(String label, String x, int axis, int parts, int width) {
        long[] sizes = new long[parts];
        java.util.Arrays.fill(sizes, width);
        return g.node("Split", label, parts, List.of(x, g.longs(sizes)), Attr.of("axis", (long) axis));
    }

    String unsqueeze(String label, String x, long... axes) {
        return op("Unsqueeze", label, x, g.longs(axes));
    }

    String reshape(String label, String x, long... shape) {
        return op("Reshape", label, x, g.longs(shape));
    }

    String transpose(String label, String x, long... perm) {
        return op("Transpose", label, List.of(x), Attr.ints("perm", perm));
    }

    String concat(String label, long axis, String... xs) {
        return op("Concat", label, List.of(xs), Attr.of("axis", axis));
    }
}
