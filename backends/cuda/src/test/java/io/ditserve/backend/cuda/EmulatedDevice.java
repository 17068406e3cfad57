package io.ditserve.backend.cuda;

import io.ditserve.backend.DitConstants;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * A CPU stand-in for the GPU, so that {@link DitForward} (launch order, arguments, buffer offsets, cuBLAS operand
 * order) can be checked against the PyTorch fixtures without a device.
 *
 * <p>Device memory is one float array addressed by fake 64-bit device addresses; allocations are recorded and every
 * pointer argument is checked to lie, with the extent the kernel touches, inside one allocation. Kernels are
 * line-by-line Java translations of dit_kernels.cu (one loop iteration per CUDA thread index; block reductions as
 * plain sums); matrix products follow cuBLAS's column-major definition literally. int buffers hold the int's bits.
 *
 * <p>As a {@link Device} it stands in for {@link CudaDevice} under {@link CudaDitBackend} and {@link CudaDecoder}:
 * copies happen at once, {@link #synchronize} has nothing to wait for. Memory grows as needed; freed memory is not
 * reused, and a freed allocation can no longer be addressed.
 */
final class EmulatedDevice implements Device, DitOps {
    /** Device addresses start here, so that a zero or small offset used as an address is caught. */
    static final DevicePtr BASE = new DevicePtr(0x7f00_0000_0000L);
    /** Host memory as a copy reads and writes it: float32, little-endian, at any alignment. */
    private static final ValueLayout.OfFloat HOST_FLOAT =
            ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private float[] mem;
    private final List<long[]> allocations = new ArrayList<>(); // {first float index, length}
    private int used;
    private boolean closed;
    final List<String> trace = new ArrayList<>();

    EmulatedDevice(long capacityFloats) {
        mem = new float[Math.toIntExact(capacityFloats)];
    }

    /** Allocates {@code floats} elements; returns the device address. */
    DevicePtr alloc(long floats) {
        if (closed) {
            throw new IllegalStateException("emulated device closed");
        }
        if (used + floats > mem.length) {
            mem = Arrays.copyOf(mem, Math.toIntExact(Math.max(used + floats, Math.min(Integer.MAX_VALUE - 64,
                    mem.length + (long) mem.length / 2))));
        }
        allocations.add(new long[] {used, floats});
        DevicePtr address = BASE.plusFloats(used);
        used = Math.toIntExact(used + (floats + 63) / 64 * 64);
        return address;
    }

    // ---- Device ----

    @Override
    public DitOps ops() {
        return this;
    }

    @Override
    public String description() {
        return "emulated device (CPU)";
    }

    @Override
    public void makeCurrent() {
        if (closed) {
            throw new IllegalStateException("emulated device closed");
        }
    }

    @Override
    public DevicePtr alloc(long bytes, String what) {
        return alloc(elements(bytes, what));
    }

    @Override
    public void free(DevicePtr address) {
        long off = address.bytesFrom(BASE);
        long first = off / DevicePtr.ELEMENT_BYTES;
        if (!allocations.removeIf(a -> a[0] == first && off >= 0)) {
            throw new IllegalArgumentException("free of " + address + ": not an allocation");
        }
    }

    /** Elements of a size in bytes, which must be a whole number of them. */
    private static long elements(long bytes, String what) {
        if (bytes % DevicePtr.ELEMENT_BYTES != 0) {
            throw new IllegalArgumentException(what + ": " + bytes + " bytes");
        }
        return bytes / DevicePtr.ELEMENT_BYTES;
    }

    @Override
    public void copyToDevice(DevicePtr dst, MemorySegment src, long bytes, String what) {
        long n = elements(bytes, what);
        View v = view(dst, n, what);
        for (long i = 0; i < n; i++) {
            v.set(i, src.get(HOST_FLOAT, DevicePtr.floatBytes(i)));
        }
    }

    @Override
    public void copyToDeviceAsync(DevicePtr dst, MemorySegment src, long bytes, String what) {
        copyToDevice(dst, src, bytes, what);
    }

    @Override
    public void copyToHostAsync(MemorySegment dst, DevicePtr src, long bytes, String what) {
        long n = elements(bytes, what);
        View v = view(src, n, what);
        for (long i = 0; i < n; i++) {
            dst.set(HOST_FLOAT, DevicePtr.floatBytes(i), v.get(i));
        }
    }

    @Override
    public void synchronize(String after) {}

    /** Frees everything; the device can no longer be used. Idempotent. */
    @Override
    public void close() {
        closed = true;
        allocations.clear();
        mem = new float[0];
    }

    /** How many allocations are live. */
    int allocationCount() {
        return allocations.size();
    }

    void write(DevicePtr address, float[] values) {
        View v = view(address, values.length, "write");
        for (int i = 0; i < values.length; i++) {
            v.set(i, values[i]);
        }
    }

    void writeInts(DevicePtr address, int[] values) {
        View v = view(address, values.length, "writeInts");
        for (int i = 0; i < values.length; i++) {
            v.set(i, Float.intBitsToFloat(values[i]));
        }
    }

    float[] read(DevicePtr address, int length) {
        View v = view(address, length, "read");
        float[] out = new float[length];
        for (int i = 0; i < length; i++) {
            out[i] = v.get(i);
        }
        return out;
    }

    /** A bounds-checked window of device memory. */
    final class View {
        private final int start;
        private final long length;
        private final String what;

        View(int start, long length, String what) {
            this.start = start;
            this.length = length;
            this.what = what;
        }

        float get(long i) {
            return mem[index(i)];
        }

        int getInt(long i) {
            return Float.floatToRawIntBits(mem[index(i)]);
        }

        void set(long i, float v) {
            mem[index(i)] = v;
        }

        private int index(long i) {
            if (i < 0 || i >= length) {
                throw new IndexOutOfBoundsException(what + ": index " + i + " outside 0.." + (length - 1));
            }
            return Math.toIntExact(start + i);
        }
    }

    /** The window [address, address + length floats), which must lie inside one allocation. */
    View view(DevicePtr address, long length, String what) {
        long off = address.bytesFrom(BASE);
        if (off < 0 || off % DevicePtr.ELEMENT_BYTES != 0) {
            throw new IllegalArgumentException(what + ": bad device address " + address);
        }
        long first = off / DevicePtr.ELEMENT_BYTES;
        for (long[] a : allocations) {
            if (first >= a[0] && first + length <= a[0] + a[1]) {
                return new View(Math.toIntExact(first), length, what);
            }
        }
        throw new IndexOutOfBoundsException(what + ": [" + first + ", " + (first + length)
                + ") is not inside one allocation");
    }

    @Override
    public void gemm(GemmCall g, DevicePtr a, DevicePtr b, DevicePtr c) {
        trace.add("gemm " + g);
        // extents of the column-major operands as stored: A is (transA ? k×m : m×k) with ld lda, etc.
        int aCols = g.transA() ? g.m() : g.k();
        int bCols = g.transB() ? g.k() : g.n();
        for (int z = 0; z < g.batch(); z++) {
            View av = view(a.plusFloats(z * g.strideA()), (long) (aCols - 1) * g.lda() + (g.transA() ? g.k() : g.m()),
                    "A");
            View bv = view(b.plusFloats(z * g.strideB()), (long) (bCols - 1) * g.ldb() + (g.transB() ? g.n() : g.k()),
                    "B");
            View cv = view(c.plusFloats(z * g.strideC()), (long) (g.n() - 1) * g.ldc() + g.m(), "C");
            // the views checked the extents; the loops index the memory directly for speed
            int a0 = av.start, b0 = bv.start, c0 = cv.start;
            long aRow = g.transA() ? g.lda() : 1, aCol = g.transA() ? 1 : g.lda(); // A(i, l) = a0 + i·aRow + l·aCol
            long bRow = g.transB() ? g.ldb() : 1, bCol = g.transB() ? 1 : g.ldb(); // B(l, j) = b0 + l·bRow + j·bCol
            for (int j = 0; j < g.n(); j++) {
                for (int i = 0; i < g.m(); i++) {
                    float sum = 0;
                    for (int l = 0; l < g.k(); l++) {
                        sum += mem[(int) (a0 + i * aRow + l * aCol)] * mem[(int) (b0 + l * bRow + j * bCol)];
                    }
                    mem[(int) (c0 + i + (long) j * g.ldc())] = sum;
                }
            }
        }
    }

    @Override
    public void launch(LaunchConfig cfg, KernelArgs a) {
        Kernel k = a.kernel();
        trace.add("launch " + k.symbol + " " + cfg);
        switch (k) {
            case PATCHIFY -> patchify(a);
            case ADD_BIAS_POS -> addBiasPos(a);
            case TIMESTEP_EMBEDDING -> timestepEmbedding(a);
            case BIAS_SILU, BIAS_GELU, ADD_BIAS, BIAS_QUICK_GELU, BIAS_GELU_ERF -> biasActivation(k, a);
            case CONDITION -> condition(a);
            case LN_MODULATE -> lnModulate(a, cfg.grid());
            case QKV_SPLIT -> qkvSplit(a);
            case SOFTMAX_ROWS -> softmaxRows(a, cfg.grid());
            case HEAD_NORM -> headNorm(a, cfg.grid());
            case HEAD_MERGE -> headMerge(a);
            case GATED_RESIDUAL -> gatedResidual(a);
            case UNPATCHIFY -> unpatchify(a);
            case COPY_VALUES -> copyValues(a);
            case SPAN_RESIDUAL -> spanResidual(a);
            case LATENT_SCALE -> latentScale(a);
            case TANH_CLAMP -> tanhClamp(a);
            case SCALE_SHIFT -> scaleShift(a);
            case CHANNEL_BIAS -> channelBias(a);
            case CHANNEL_BIAS_RESIDUAL -> channelBiasResidual(a);
            case GROUP_NORM -> groupNorm(a, cfg.grid());
            case IM2COL_3X3 -> im2col(a);
            case TEMB_SILU -> tembSilu(a);
            case QKV_SPLIT_SEQ -> qkvSplitSeq(a);
            case HEAD_RMS_NORM -> headRmsNorm(a, cfg.grid());
            case HEAD_MERGE_SEQ -> headMergeSeq(a);
            case EMBED_TOKENS -> embedTokens(a);
            case LAYER_NORM -> layerNorm(a, cfg.grid());
            case RMS_NORM -> rmsNorm(a, cfg.grid());
            case SOFTMAX_CAUSAL -> softmaxCausal(a, cfg.grid());
            case SOFTMAX_BIAS -> softmaxBias(a, cfg.grid());
            case ADD_RESIDUAL -> addResidual(a);
            case GATED_GELU -> gatedGelu(a);
            case GATHER_ROWS -> gatherRows(a);
        }
    }

    private static float silu(float v) {
        return v / (1.0f + (float) Math.exp(-v));
    }

    private static float geluTanh(float u) {
        return 0.5f * u * (1.0f + (float) Math.tanh(0.7978845608028654f * (u + 0.044715f * u * u * u)));
    }

    /** Mean of v[r .. r + len) and 1/√(var + eps), var the biased variance of the centred values (centred_inv_std). */
    private record Moments(float mean, float invStd) {
        static Moments of(View v, long r, int len, float eps) {
            float s = 0;
            for (int k = 0; k < len; k++) {
                s += v.get(r + k);
            }
            float mean = s / len;
            float q = 0;
            for (int k = 0; k < len; k++) {
                float c = v.get(r + k) - mean;
                q += c * c;
            }
            return new Moments(mean, 1.0f / (float) Math.sqrt(q / len + eps));
        }
    }

    /** 1/√(mean(v²) + eps) over v[r .. r + len) (rms_inv). */
    private static float rmsInv(View v, long r, int len, float eps) {
        float q = 0;
        for (int k = 0; k < len; k++) {
            q += v.get(r + k) * v.get(r + k);
        }
        return 1.0f / (float) Math.sqrt(q / len + eps);
    }

    /** A row's logit k, as the softmax kernels compute it. */
    private interface Logit {
        float at(int k);
    }

    /** s[r .. r + keep) = softmax of the logits, in place, and s[r + keep .. r + len) = 0 (softmax_row). */
    private static void softmaxRow(View s, long r, int len, int keep, Logit logit) {
        float mx = Float.NEGATIVE_INFINITY;
        for (int k = 0; k < keep; k++) {
            mx = Math.max(mx, logit.at(k));
        }
        float sum = 0;
        for (int k = 0; k < keep; k++) {
            float e = (float) Math.exp(logit.at(k) - mx);
            s.set(r + k, e);
            sum += e;
        }
        for (int k = 0; k < len; k++) {
            s.set(r + k, k < keep ? s.get(r + k) / sum : 0f);
        }
    }

    /** The largest int of v[0 .. n) and 0 (the extent of a table indexed by them). */
    private static int maxInt(View v, int n) {
        int max = 0;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, v.getInt(i));
        }
        return max;
    }

    /** Element i of qkv (+ bias) to q | k | v of parts of partLen, [N, heads, seq, headDim] (split_qkv_element). */
    private static void splitQkvElement(View qkv, View bias, View out, int i, int tokens, int heads, int headDim,
            int seq, int seqOff, int partLen) {
        int d = heads * headDim;
        int row = i / (3 * d), col = i % (3 * d);
        int part = col / d, within = col % d;
        int head = within / headDim, e = within % headDim;
        int sample = row / tokens, token = row % tokens;
        out.set((long) part * partLen + ((long) (sample * heads + head) * seq + seqOff + token) * headDim + e,
                qkv.get(i) + bias.get(col));
    }

    /** Element i of att [N·tokens, d] from o [N, heads, seq, headDim] (merged_head_element). */
    private static float mergedHeadElement(View o, int i, int tokens, int heads, int headDim, int seq, int seqOff) {
        int d = heads * headDim;
        int row = i / d, within = i % d;
        int head = within / headDim, e = within % headDim;
        int sample = row / tokens, token = row % tokens;
        return o.get(((long) (sample * heads + head) * seq + seqOff + token) * headDim + e);
    }

    private void patchify(KernelArgs a) {
        int total = a.intValue(2), c = a.intValue(3), size = a.intValue(4), p = a.intValue(5);
        int g = size / p, tokens = g * g, patchLen = c * p * p;
        int n = total / (tokens * patchLen);
        View x = view(a.pointer(0), (long) n * c * size * size, "patchify.x");
        View patches = view(a.pointer(1), total, "patchify.patches");
        for (int i = 0; i < total; i++) {
            int row = i / patchLen, col = i % patchLen;
            int sample = row / tokens, token = row % tokens;
            int gi = token / g, gj = token % g;
            int ch = col / (p * p), aa = (col / p) % p, b = col % p;
            patches.set(i, x.get(((sample * c + ch) * size + gi * p + aa) * size + gj * p + b));
        }
    }

    private void addBiasPos(KernelArgs a) {
        int total = a.intValue(3), d = a.intValue(4), tokens = a.intValue(5);
        View x = view(a.pointer(0), total, "add_bias_pos.x");
        View bias = view(a.pointer(1), d, "add_bias_pos.bias");
        View pos = view(a.pointer(2), (long) tokens * d, "add_bias_pos.pos");
        for (int i = 0; i < total; i++) {
            int row = i / d, k = i % d;
            x.set(i, (x.get(i) + bias.get(k)) + pos.get((row % tokens) * d + k));
        }
    }

    private void timestepEmbedding(KernelArgs a) {
        int total = a.intValue(3);
        int half = DitConstants.FREQ_HALF;
        View t = view(a.pointer(0), total / half, "timestep_embedding.t");
        View freqs = view(a.pointer(1), half, "timestep_embedding.freqs");
        View out = view(a.pointer(2), 2L * total, "timestep_embedding.out");
        for (int i = 0; i < total; i++) {
            int sample = i / half, k = i % half;
            float arg = t.get(sample) * freqs.get(k);
            out.set(sample * 2 * half + k, (float) Math.cos(arg));
            out.set(sample * 2 * half + half + k, (float) Math.sin(arg));
        }
    }

    private void biasActivation(Kernel kernel, KernelArgs a) {
        int total = a.intValue(2), cols = a.intValue(3);
        View v = view(a.pointer(0), total, kernel.symbol + ".v");
        View bias = view(a.pointer(1), cols, kernel.symbol + ".bias");
        for (int i = 0; i < total; i++) {
            float u = v.get(i) + bias.get(i % cols);
            v.set(i, switch (kernel) {
                case BIAS_SILU -> silu(u);
                case BIAS_GELU -> geluTanh(u);
                case BIAS_QUICK_GELU -> u / (1.0f + (float) Math.exp(-1.702f * u));
                case BIAS_GELU_ERF -> 0.5f * u * (1.0f + erf(u * 0.7071067811865476f));
                default -> u;
            });
        }
    }

    private void condition(KernelArgs a) {
        int total = a.intValue(5), d = a.intValue(6);
        int n = total / d;
        View temb = view(a.pointer(0), total, "condition.temb");
        View bias = view(a.pointer(1), d, "condition.bias");
        View y = view(a.pointer(3), n, "condition.y");
        View table = view(a.pointer(2), (long) (maxInt(y, n) + 1) * d, "condition.table");
        View siluC = view(a.pointer(4), total, "condition.silu_c");
        for (int i = 0; i < total; i++) {
            int sample = i / d, k = i % d;
            float c = (temb.get(i) + bias.get(k)) + table.get((long) y.getInt(sample) * d + k);
            siluC.set(i, silu(c));
        }
    }

    private void headNorm(KernelArgs a, int rows) {
        int cols = a.intValue(3);
        View v = view(a.pointer(0), (long) rows * cols, "head_norm.v");
        View w = view(a.pointer(1), cols, "head_norm.weight");
        View b = view(a.pointer(2), cols, "head_norm.bias");
        for (long row = 0; row < rows; row++) {
            long r = row * cols;
            Moments m = Moments.of(v, r, cols, 1e-5f); // QK_NORM_EPS
            for (int k = 0; k < cols; k++) {
                v.set(r + k, (v.get(r + k) - m.mean()) * m.invStd() * w.get(k) + b.get(k));
            }
        }
    }

    private void lnModulate(KernelArgs a, int rows) {
        int d = a.intValue(3), tokens = a.intValue(4), modStride = a.intValue(5);
        int shiftOff = a.intValue(6), scaleOff = a.intValue(7);
        if (shiftOff + d > modStride || scaleOff + d > modStride) {
            throw new IndexOutOfBoundsException("ln_modulate: chunk outside the modulation row");
        }
        View x = view(a.pointer(0), (long) rows * d, "ln_modulate.x");
        View h = view(a.pointer(1), (long) rows * d, "ln_modulate.h");
        View mod = view(a.pointer(2), (long) ((rows - 1) / tokens + 1) * modStride, "ln_modulate.mod");
        for (long row = 0; row < rows; row++) {
            long xr = row * d;
            long m = (row / tokens) * modStride;
            Moments mo = Moments.of(x, xr, d, 1e-6f); // LN_EPS
            for (int k = 0; k < d; k++) {
                h.set(xr + k, (x.get(xr + k) - mo.mean()) * mo.invStd() * (1.0f + mod.get(m + scaleOff + k))
                        + mod.get(m + shiftOff + k));
            }
        }
    }

    private void qkvSplit(KernelArgs a) {
        int total = a.intValue(3), tokens = a.intValue(4), heads = a.intValue(5), headDim = a.intValue(6);
        View qkv = view(a.pointer(0), total, "qkv_split.qkv");
        View bias = view(a.pointer(1), 3L * heads * headDim, "qkv_split.bias");
        View out = view(a.pointer(2), total, "qkv_split.heads_out");
        for (int i = 0; i < total; i++) {
            splitQkvElement(qkv, bias, out, i, tokens, heads, headDim, tokens, 0, total / 3);
        }
    }

    private void softmaxRows(KernelArgs a, int rows) {
        int len = a.intValue(1);
        float scale = a.floatValue(2);
        View s = view(a.pointer(0), (long) rows * len, "softmax_rows.s");
        for (long row = 0; row < rows; row++) {
            long r = row * len;
            softmaxRow(s, r, len, len, k -> s.get(r + k) * scale);
        }
    }

    private void headMerge(KernelArgs a) {
        int total = a.intValue(2), tokens = a.intValue(3), heads = a.intValue(4), headDim = a.intValue(5);
        View o = view(a.pointer(0), total, "head_merge.o");
        View att = view(a.pointer(1), total, "head_merge.att");
        for (int i = 0; i < total; i++) {
            att.set(i, mergedHeadElement(o, i, tokens, heads, headDim, tokens, 0));
        }
    }

    private void gatedResidual(KernelArgs a) {
        int total = a.intValue(4), d = a.intValue(5), tokens = a.intValue(6);
        int modStride = a.intValue(7), gateOff = a.intValue(8);
        if (gateOff + d > modStride) {
            throw new IndexOutOfBoundsException("gated_residual: gate chunk outside the modulation row");
        }
        View x = view(a.pointer(0), total, "gated_residual.x");
        View v = view(a.pointer(1), total, "gated_residual.v");
        View bias = view(a.pointer(2), d, "gated_residual.bias");
        View mod = view(a.pointer(3), (long) (total / d / tokens) * modStride, "gated_residual.mod");
        for (int i = 0; i < total; i++) {
            int row = i / d, k = i % d;
            x.set(i, x.get(i) + mod.get((long) (row / tokens) * modStride + gateOff + k) * (v.get(i) + bias.get(k)));
        }
    }

    private void unpatchify(KernelArgs a) {
        int total = a.intValue(3), cOut = a.intValue(4), size = a.intValue(5), p = a.intValue(6);
        int g = size / p, rowLen = p * p * cOut;
        int n = total / (cOut * size * size);
        View tok = view(a.pointer(0), (long) n * g * g * rowLen, "unpatchify.tok");
        View bias = view(a.pointer(1), rowLen, "unpatchify.bias");
        View out = view(a.pointer(2), total, "unpatchify.out");
        for (int i = 0; i < total; i++) {
            int xx = i % size, yy = (i / size) % size;
            int ch = (i / (size * size)) % cOut, sample = i / (size * size * cOut);
            int gi = yy / p, aa = yy % p, gj = xx / p, b = xx % p;
            int col = (aa * p + b) * cOut + ch;
            out.set(i, tok.get((long) (sample * g * g + gi * g + gj) * rowLen + col) + bias.get(col));
        }
    }

    private void copyValues(KernelArgs a) {
        int total = a.intValue(2);
        View src = view(a.pointer(0), total, "copy_values.src");
        View dst = view(a.pointer(1), total, "copy_values.dst");
        for (int i = 0; i < total; i++) {
            dst.set(i, src.get(i));
        }
    }

    private void spanResidual(KernelArgs a) {
        int total = a.intValue(2);
        View x = view(a.pointer(0), total, "span_residual.x");
        View r = view(a.pointer(1), total, "span_residual.r");
        for (int i = 0; i < total; i++) {
            r.set(i, x.get(i) - r.get(i));
        }
    }

    // ---- the decoders' kernels ----

    private void latentScale(KernelArgs a) {
        int total = a.intValue(2);
        float divisor = a.floatValue(3), shift = a.floatValue(4);
        View in = view(a.pointer(0), total, "latent_scale.in");
        View out = view(a.pointer(1), total, "latent_scale.out");
        for (int i = 0; i < total; i++) {
            out.set(i, in.get(i) / divisor + shift);
        }
    }

    private void tanhClamp(KernelArgs a) {
        int total = a.intValue(2);
        float m = a.floatValue(3);
        View in = view(a.pointer(0), total, "tanh_clamp.in");
        View out = view(a.pointer(1), total, "tanh_clamp.out");
        for (int i = 0; i < total; i++) {
            out.set(i, (float) Math.tanh(in.get(i) / m) * m);
        }
    }

    private void scaleShift(KernelArgs a) {
        int total = a.intValue(1);
        float scale = a.floatValue(2), shift = a.floatValue(3);
        View v = view(a.pointer(0), total, "scale_shift.v");
        for (int i = 0; i < total; i++) {
            v.set(i, v.get(i) * scale + shift);
        }
    }

    private void channelBias(KernelArgs a) {
        int total = a.intValue(2), hw = a.intValue(3), c = a.intValue(4);
        boolean relu = a.intValue(5) != 0;
        View y = view(a.pointer(0), total, "channel_bias.y");
        View bias = view(a.pointer(1), c, "channel_bias.bias");
        for (int i = 0; i < total; i++) {
            float v = y.get(i) + bias.get((i / hw) % c);
            y.set(i, relu ? Math.max(v, 0f) : v);
        }
    }

    private void channelBiasResidual(KernelArgs a) {
        int total = a.intValue(3), hw = a.intValue(4), c = a.intValue(5);
        boolean relu = a.intValue(6) != 0;
        View y = view(a.pointer(0), total, "channel_bias_residual.y");
        View bias = view(a.pointer(1), c, "channel_bias_residual.bias");
        View res = view(a.pointer(2), total, "channel_bias_residual.res");
        for (int i = 0; i < total; i++) {
            float v = (y.get(i) + bias.get((i / hw) % c)) + res.get(i);
            y.set(i, relu ? Math.max(v, 0f) : v);
        }
    }

    private void groupNorm(KernelArgs a, int blocks) {
        int c = a.intValue(4), hw = a.intValue(5), groups = a.intValue(6);
        float eps = a.floatValue(7);
        boolean silu = a.intValue(8) != 0;
        if (c % groups != 0) {
            throw new IllegalArgumentException("group_norm: " + c + " channels in " + groups + " groups");
        }
        int perGroup = c / groups, len = perGroup * hw;
        View x = view(a.pointer(0), (long) blocks * len, "group_norm.x");
        View y = view(a.pointer(1), (long) blocks * len, "group_norm.y");
        View gamma = view(a.pointer(2), c, "group_norm.gamma");
        View beta = view(a.pointer(3), c, "group_norm.beta");
        for (int blk = 0; blk < blocks; blk++) {
            long base = (long) blk * len;
            int first = (blk % groups) * perGroup;
            Moments m = Moments.of(x, base, len, eps);
            for (int k = 0; k < len; k++) {
                int ch = first + k / hw;
                float v = (x.get(base + k) - m.mean()) * m.invStd() * gamma.get(ch) + beta.get(ch);
                y.set(base + k, silu ? silu(v) : v);
            }
        }
    }

    private void im2col(KernelArgs a) {
        int total = a.intValue(2), c = a.intValue(3), h = a.intValue(4), w = a.intValue(5), up = a.intValue(6);
        int firstPixel = a.intValue(7), tile = a.intValue(8);
        int bigH = h * up, bigW = w * up, rows = c * 9;
        if (total % (rows * tile) != 0 || firstPixel < 0 || firstPixel + tile > bigH * bigW) {
            throw new IllegalArgumentException("im2col_3x3: total " + total + ", tile " + tile + " from pixel "
                    + firstPixel + " of " + bigH + "×" + bigW);
        }
        int samples = total / (rows * tile);
        if (samples > 1 && tile != bigH * bigW) {
            throw new IllegalArgumentException("im2col_3x3: several samples in a partial tile");
        }
        View x = view(a.pointer(0), (long) samples * c * h * w, "im2col_3x3.x");
        View col = view(a.pointer(1), total, "im2col_3x3.col");
        for (int i = 0; i < total; i++) {
            int j = i % tile, r = (i / tile) % rows, s = i / (tile * rows);
            int p = firstPixel + j, oy = p / bigW, ox = p % bigW;
            int ch = r / 9, ky = (r % 9) / 3, kx = r % 3;
            int iy = oy + ky - 1, ix = ox + kx - 1;
            col.set(i, iy >= 0 && iy < bigH && ix >= 0 && ix < bigW
                    ? x.get(((long) (s * c + ch) * h + iy / up) * w + ix / up)
                    : 0f);
        }
    }

    // ---- the MMDiT's and the text encoders' kernels ----

    private void tembSilu(KernelArgs a) {
        int total = a.intValue(5), d = a.intValue(6);
        View temb = view(a.pointer(0), total, "temb_silu.temb");
        View tembBias = view(a.pointer(1), d, "temb_silu.temb_bias");
        View pooled = view(a.pointer(2), total, "temb_silu.pooled");
        View pooledBias = view(a.pointer(3), d, "temb_silu.pooled_bias");
        View out = view(a.pointer(4), total, "temb_silu.silu_c");
        for (int i = 0; i < total; i++) {
            int k = i % d;
            out.set(i, silu((temb.get(i) + tembBias.get(k)) + (pooled.get(i) + pooledBias.get(k))));
        }
    }

    private void qkvSplitSeq(KernelArgs a) {
        int total = a.intValue(3), tokens = a.intValue(4), heads = a.intValue(5), headDim = a.intValue(6);
        int seq = a.intValue(7), seqOff = a.intValue(8), partLen = a.intValue(9);
        int d = heads * headDim;
        int n = total / (3 * d * tokens);
        if (total % (3 * d * tokens) != 0 || seqOff + tokens > seq || (long) n * heads * seq * headDim > partLen) {
            throw new IllegalArgumentException("qkv_split_seq: " + total + " values of " + tokens + " tokens into "
                    + "sequences of " + seq + " from " + seqOff + ", parts of " + partLen);
        }
        View qkv = view(a.pointer(0), total, "qkv_split_seq.qkv");
        View bias = view(a.pointer(1), 3L * d, "qkv_split_seq.bias");
        View out = view(a.pointer(2), 3L * partLen, "qkv_split_seq.heads_out");
        for (int i = 0; i < total; i++) {
            splitQkvElement(qkv, bias, out, i, tokens, heads, headDim, seq, seqOff, partLen);
        }
    }

    private void headRmsNorm(KernelArgs a, int rows) {
        int cols = a.intValue(3), seq = a.intValue(4), split = a.intValue(5);
        float eps = a.floatValue(6);
        View v = view(a.pointer(0), (long) rows * cols, "head_rms_norm.v");
        View wa = view(a.pointer(1), cols, "head_rms_norm.weight_a");
        View wb = view(a.pointer(2), cols, "head_rms_norm.weight_b");
        for (long row = 0; row < rows; row++) {
            long r = row * cols;
            View w = row % seq < split ? wa : wb;
            float inv = rmsInv(v, r, cols, eps);
            for (int k = 0; k < cols; k++) {
                v.set(r + k, v.get(r + k) * inv * w.get(k));
            }
        }
    }

    private void headMergeSeq(KernelArgs a) {
        int total = a.intValue(2), tokens = a.intValue(3), heads = a.intValue(4), headDim = a.intValue(5);
        int seq = a.intValue(6), seqOff = a.intValue(7);
        int d = heads * headDim;
        int n = total / (d * tokens);
        if (total % (d * tokens) != 0 || seqOff + tokens > seq) {
            throw new IllegalArgumentException("head_merge_seq: " + total + " values of " + tokens + " tokens from "
                    + "sequences of " + seq + " at " + seqOff);
        }
        View o = view(a.pointer(0), (long) n * heads * seq * headDim, "head_merge_seq.o");
        View att = view(a.pointer(1), total, "head_merge_seq.att");
        for (int i = 0; i < total; i++) {
            att.set(i, mergedHeadElement(o, i, tokens, heads, headDim, seq, seqOff));
        }
    }

    private void embedTokens(KernelArgs a) {
        int total = a.intValue(4), d = a.intValue(5), tokens = a.intValue(6);
        boolean usePos = a.intValue(7) != 0;
        int rows = total / d;
        View ids = view(a.pointer(0), rows, "embed_tokens.ids");
        View table = view(a.pointer(1), (long) (maxInt(ids, rows) + 1) * d, "embed_tokens.table");
        View pos = usePos ? view(a.pointer(2), (long) tokens * d, "embed_tokens.pos") : null;
        View x = view(a.pointer(3), total, "embed_tokens.x");
        for (int i = 0; i < total; i++) {
            int row = i / d, k = i % d;
            float e = table.get((long) ids.getInt(row) * d + k);
            x.set(i, usePos ? e + pos.get((long) (row % tokens) * d + k) : e);
        }
    }

    private void layerNorm(KernelArgs a, int rows) {
        int d = a.intValue(4);
        float eps = a.floatValue(5);
        View x = view(a.pointer(0), (long) rows * d, "layer_norm.x");
        View y = view(a.pointer(1), (long) rows * d, "layer_norm.y");
        View w = view(a.pointer(2), d, "layer_norm.weight");
        View b = view(a.pointer(3), d, "layer_norm.bias");
        for (long row = 0; row < rows; row++) {
            long r = row * d;
            Moments m = Moments.of(x, r, d, eps);
            for (int k = 0; k < d; k++) {
                y.set(r + k, (x.get(r + k) - m.mean()) * m.invStd() * w.get(k) + b.get(k));
            }
        }
    }

    private void rmsNorm(KernelArgs a, int rows) {
        int d = a.intValue(3);
        float eps = a.floatValue(4);
        View x = view(a.pointer(0), (long) rows * d, "rms_norm.x");
        View y = view(a.pointer(1), (long) rows * d, "rms_norm.y");
        View w = view(a.pointer(2), d, "rms_norm.weight");
        for (long row = 0; row < rows; row++) {
            long r = row * d;
            float inv = rmsInv(x, r, d, eps);
            for (int k = 0; k < d; k++) {
                y.set(r + k, w.get(k) * (x.get(r + k) * inv));
            }
        }
    }

    /**
     * erf(x) rounded to float, standing in for CUDA's erff (within 2 ulp of it): for |x| ≤ 4 the Maclaurin series
     * 2/√π·Σ (−1)ⁿ x^(2n+1) / (n!·(2n+1)) summed in double (the terms' cancellation costs at most 6 of double's 16
     * digits at |x| = 4, far below float's); above, ±1, which is erf rounded to float there (erfc(4) ≈ 1.5e−8 is
     * below half a float ulp under 1).
     */
    static float erf(float xf) {
        double x = xf;
        if (Math.abs(x) > 4) {
            return x < 0 ? -1f : 1f;
        }
        double term = x;
        double sum = x;
        for (int n = 1; n < 200; n++) {
            term *= -x * x / n; // (−1)ⁿ x^(2n+1) / n!
            double t = term / (2 * n + 1);
            sum += t;
            if (Math.abs(t) <= 1e-17 * Math.abs(sum)) {
                break;
            }
        }
        return (float) (2 / Math.sqrt(Math.PI) * sum);
    }

    private void softmaxCausal(KernelArgs a, int rows) {
        int len = a.intValue(1);
        float scale = a.floatValue(2);
        View s = view(a.pointer(0), (long) rows * len, "softmax_causal.s");
        for (long row = 0; row < rows; row++) {
            long r = row * len;
            softmaxRow(s, r, len, (int) (row % len) + 1, k -> s.get(r + k) * scale);
        }
    }

    private void softmaxBias(KernelArgs a, int rows) {
        int len = a.intValue(2), heads = a.intValue(3);
        View s = view(a.pointer(0), (long) rows * len, "softmax_bias.s");
        View bias = view(a.pointer(1), (long) heads * len * len, "softmax_bias.bias");
        for (long row = 0; row < rows; row++) {
            long r = row * len;
            long b = ((row / len) % heads * len + row % len) * len;
            softmaxRow(s, r, len, len, k -> s.get(r + k) + bias.get(b + k));
        }
    }

    private void addResidual(KernelArgs a) {
        int total = a.intValue(3), cols = a.intValue(4);
        View x = view(a.pointer(0), total, "add_residual.x");
        View v = view(a.pointer(1), total, "add_residual.v");
        View bias = view(a.pointer(2), cols, "add_residual.bias");
        for (int i = 0; i < total; i++) {
            x.set(i, x.get(i) + (v.get(i) + bias.get(i % cols)));
        }
    }

    private void gatedGelu(KernelArgs a) {
        int total = a.intValue(2), ff = a.intValue(3);
        View gates = view(a.pointer(0), 2L * total, "gated_gelu.gates");
        View out = view(a.pointer(1), total, "gated_gelu.out");
        for (int i = 0; i < total; i++) {
            long g = (long) (i / ff) * 2 * ff;
            int k = i % ff;
            out.set(i, geluTanh(gates.get(g + k)) * gates.get(g + ff + k));
        }
    }

    private void gatherRows(KernelArgs a) {
        int total = a.intValue(3), d = a.intValue(4);
        int n = total / d;
        View rows = view(a.pointer(1), n, "gather_rows.rows");
        View x = view(a.pointer(0), (long) (maxInt(rows, n) + 1) * d, "gather_rows.x");
        View out = view(a.pointer(2), total, "gather_rows.out");
        for (int i = 0; i < total; i++) {
            out.set(i, x.get((long) rows.getInt(i / d) * d + i % d));
        }
    }
}
