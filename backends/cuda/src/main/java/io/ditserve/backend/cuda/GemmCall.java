package io.ditserve.backend.cuda;

/**
 * The arguments of one cuBLAS {@code cublasSgemm} / {@code cublasSgemmStridedBatched} call, apart from the three
 * matrix pointers: {@code C = alpha·op(A)·op(B) + beta·C} with alpha = 1 and beta = 0, where op(A) is m×k, op(B)
 * is k×n and C is m×n, all COLUMN-major with leading dimensions lda, ldb, ldc; batch item z uses A + z·strideA,
 * B + z·strideB, C + z·strideC (strides in elements).
 *
 * <p>Our buffers are ROW-major. The one fact every factory below uses: a row-major R×C matrix with row length C is,
 * read column-major with leading dimension C, its transpose (a C×R matrix). So a row-major product Y = X·Wᵀ is
 * computed as the column-major product Yᵀ = W·Xᵀ, i.e. with the operands swapped.
 */
record GemmCall(boolean transA, boolean transB, int m, int n, int k, int lda, int ldb, int ldc,
        long strideA, long strideB, long strideC, int batch) {

    /** cublasOperation_t: CUBLAS_OP_N. */
    static final int OP_N = 0;
    /** cublasOperation_t: CUBLAS_OP_T. */
    static final int OP_T = 1;

    GemmCall {
        if (m < 1 || n < 1 || k < 1 || batch < 1) {
            throw new IllegalArgumentException("empty matrix product " + m + "×" + n + "×" + k + " ×" + batch);
        }
        if (lda < (transA ? k : m) || ldb < (transB ? n : k) || ldc < m) {
            throw new IllegalArgumentException("leading dimension too small in " + this);
        }
    }

    int opA() {
        return transA ? OP_T : OP_N;
    }

    int opB() {
        return transB ? OP_T : OP_N;
    }

    boolean batched() {
        return batch > 1;
    }

    /**
     * A PyTorch {@code nn.Linear} on {@code rows} rows: Y[rows, out] = X[rows, in]·Wᵀ with W row-major [out, in].
     * Column-major: Yᵀ (out×rows, ld out) = W (W's buffer read column-major is Wᵀ, in×out with ld in, so op = T)
     * times Xᵀ (X's buffer read column-major: in×rows, ld in, op = N). Pass A = W, B = X, C = Y.
     */
    static GemmCall linear(int rows, int out, int in) {
        return new GemmCall(true, false, out, rows, in, in, in, out, 0, 0, 0, 1);
    }

    /**
     * Attention scores for {@code batch} (sample, head) pairs: S_z[T, T] = Q_z[T, hd]·K_zᵀ, all row-major, pair z at
     * offset z·T·hd in Q and K and z·T·T in S. Column-major: Sᵀ (T×T, ld T) = K·Qᵀ = op(A)·op(B) with A = K's
     * buffer (read column-major: Kᵀ, hd×T, ld hd; op = T gives K) and B = Q's buffer (Qᵀ, hd×T, ld hd; op = N).
     * Element (j, i) of the result, at S + i·T + j, is Σ_e K[j, e]·Q[i, e] = S[i, j]. Pass A = K, B = Q, C = S.
     */
    static GemmCall attentionScores(int tokens, int headDim, int batch) {
        long qk = (long) tokens * headDim;
        return new GemmCall(true, false, tokens, tokens, headDim, headDim, headDim, tokens,
                qk, qk, (long) tokens * tokens, batch);
    }

    /**
     * Attention output for {@code batch} (sample, head) pairs: O_z[T, hd] = P_z[T, T]·V_z[T, hd], all row-major.
     * Column-major: Oᵀ (hd×T, ld hd) = Vᵀ·Pᵀ = op(A)·op(B) with A = V's buffer (read column-major: Vᵀ, hd×T, ld hd,
     * op = N) and B = P's buffer (Pᵀ, T×T, ld T, op = N). Element (e, i), at O + i·hd + e, is
     * Σ_j V[j, e]·P[i, j] = O[i, e]. Pass A = V, B = P, C = O.
     */
    static GemmCall attentionValues(int tokens, int headDim, int batch) {
        long vo = (long) tokens * headDim;
        return new GemmCall(false, false, headDim, tokens, tokens, headDim, tokens, headDim,
                vo, (long) tokens * tokens, vo, batch);
    }

    /**
     * A convolution as a matrix product, for {@code batch} samples: Y_z[out, cols] = W[out, k]·X_z[k, cols], all
     * row-major, where X holds the input channels (a 1×1 convolution) or the im2col columns (3×3) and Y the output
     * channel planes. X's rows are {@code ldx} long, Y's {@code ldy} (a tile of pixels writes {@code cols} columns of
     * rows as long as the whole image). Column-major: Yᵀ (cols×out, ld ldy) = Xᵀ·Wᵀ = op(A)·op(B) with A = X's
     * buffer (read column-major: Xᵀ, cols×k, ld ldx; op = N) and B = W's buffer (Wᵀ, k×out, ld k; op = N). Item z
     * reads X + z·strideX and writes Y + z·strideY; the weight is shared (stride 0). Pass A = X, B = W, C = Y.
     */
    static GemmCall convolution(int cols, int out, int k, int ldx, int ldy, long strideX, long strideY, int batch) {
        return new GemmCall(false, false, cols, out, k, ldx, k, ldy, strideX, 0, strideY, batch);
    }

    /**
     * Attention scores of one head whose activations are channel planes (the decoders' mid-block attention): for
     * {@code rows} queries starting at query i0, S_z[rows, T] with S[i, j] = Σ_e Q[e, i0 + i]·K[e, j], where Q and K
     * are row-major [C, T]. Column-major: Sᵀ (T×rows, ld T) = op(A)·op(B) with A = K's buffer (read column-major:
     * Kᵀ, T×C, ld T; op = N) and B = Q's buffer from column i0 (read column-major with ld T, the rows×C matrix
     * Qᵀ[i0.., :] stored as its transpose; op = T). Pass A = K, B = Q + i0, C = S; strides per sample.
     */
    static GemmCall channelScores(int tokens, int rows, int channels, long strideQK, long strideS, int batch) {
        return new GemmCall(false, true, tokens, rows, channels, tokens, tokens, tokens, strideQK, strideQK, strideS,
                batch);
    }

    /**
     * Attention output into channel planes: O[e, i0 + i] = Σ_j P[i, j]·V[e, j] for the {@code rows} rows of P
     * [rows, T] (row-major) and V, O row-major [C, T]. Column-major: Oᵀ from row i0 (rows×C, ld T) = op(A)·op(B)
     * with A = P's buffer (read column-major: Pᵀ, T×rows, ld T; op = T gives P) and B = V's buffer (Vᵀ, T×C, ld T;
     * op = N). Pass A = P, B = V, C = O + i0; strides per sample.
     */
    static GemmCall channelValues(int tokens, int rows, int channels, long strideP, long strideV, long strideO,
            int batch) {
        return new GemmCall(true, false, rows, channels, tokens, tokens, tokens, tokens, strideP, strideV, strideO,
                batch);
    }
}
