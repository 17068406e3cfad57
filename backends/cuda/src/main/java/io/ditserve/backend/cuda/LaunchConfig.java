package io.ditserve.backend.cuda;

/**
 * A one-dimensional kernel launch: {@code grid} blocks of {@code block} threads (the y and z dimensions are 1).
 *
 * <p>The two shapes {@code dit_kernels.cu} uses: element-wise kernels walk their elements with a grid-stride loop,
 * so any grid covers them and the grid is only capped; row kernels run one block per row and reduce across the
 * block with warp shuffles, so their block is a whole number of warps.
 */
record LaunchConfig(int grid, int block) {
    /** Threads per block of element-wise kernels. */
    static final int ELEMENTWISE_BLOCK = 256;
    /** Cap on element-wise grids; the grid-stride loop covers the rest. */
    static final int MAX_ELEMENTWISE_GRID = 1 << 20;
    /** Largest block of row kernels (the kernels allow up to 1024). */
    static final int MAX_ROW_BLOCK = 256;
    /** Largest element count of one element-wise launch: the kernels index with int, the loop adds one stride. */
    static final long MAX_ELEMENTS = 1L << 30;

    LaunchConfig {
        if (grid < 1 || block < 32 || block > 1024 || block % 32 != 0) {
            throw new IllegalArgumentException("invalid launch: grid " + grid + ", block " + block);
        }
    }

    /** For an element-wise kernel over {@code total} elements. */
    static LaunchConfig elementwise(long total) {
        if (total < 1 || total > MAX_ELEMENTS) {
            throw new IllegalArgumentException("element-wise launch over " + total + " elements (1.." + MAX_ELEMENTS
                    + " allowed)");
        }
        long blocks = (total + ELEMENTWISE_BLOCK - 1) / ELEMENTWISE_BLOCK;
        return new LaunchConfig((int) Math.min(blocks, MAX_ELEMENTWISE_GRID), ELEMENTWISE_BLOCK);
    }

    /** For a row kernel: one block per row of {@code rowLength} elements, a warp at least. */
    static LaunchConfig rows(int rows, int rowLength) {
        return rows(rows, rowLength, MAX_ROW_BLOCK);
    }

    /**
     * For a row kernel whose rows can be long and few (the decoders' group norms: one row per sample and group, up
     * to a million values): up to {@link #MAX_LONG_ROW_BLOCK} threads per row.
     */
    static LaunchConfig longRows(int rows, int rowLength) {
        return rows(rows, rowLength, MAX_LONG_ROW_BLOCK);
    }

    /** Largest block of {@link #longRows}. */
    static final int MAX_LONG_ROW_BLOCK = 1024;

    private static LaunchConfig rows(int rows, int rowLength, int maxBlock) {
        if (rowLength < 1) {
            throw new IllegalArgumentException("row length " + rowLength);
        }
        int warps = (Math.min(rowLength, maxBlock) + 31) / 32;
        return new LaunchConfig(rows, 32 * warps);
    }
}
