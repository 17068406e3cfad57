package io.ditserve.backend;

import java.util.Arrays;

/**
 * What each sample of a forward pass is conditioned on, as data: the transformer receives it beside x and the time.
 * Sealed, so that a backend's forward program switches over every kind it may be given and the compiler checks that
 * none is forgotten. Class-conditional families (DiT, SiT, REPA) take {@link ClassLabels}; text-to-image families
 * (issue 24) add a kind carrying token embeddings with a mask and a pooled vector.
 */
public sealed interface Conditioning permits Conditioning.ClassLabels, Conditioning.TextEmbeddings {

    /** Samples described: must equal the batch size of the pass. */
    int size();

    /**
     * One class id per sample, each in 0..num_classes, where num_classes selects the unconditional ("null")
     * embedding ({@link ModelSpec#nullClass()}).
     */
    record ClassLabels(int[] ids) implements Conditioning {
        public ClassLabels {
            java.util.Objects.requireNonNull(ids, "ids");
        }

        @Override
        public int size() {
            return ids.length;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof ClassLabels c && Arrays.equals(ids, c.ids);
        }

        @Override
        public int hashCode() {
            return Arrays.hashCode(ids);
        }

        @Override
        public String toString() {
            return "ClassLabels" + Arrays.toString(ids);
        }
    }

    /**
     * Per sample, a prompt's encoded tokens and its pooled vector, as a text-to-image transformer takes them (SD3's
     * MMDiT: {@code encoder_hidden_states} and {@code pooled_projections}; docs/TEXT_MODELS.md). Row-major arrays of
     * the whole batch; the unconditional twin of a guided sample carries the negative prompt's embeddings.
     *
     * @param context [n, tokens, width]
     * @param pooled [n, pooledWidth]
     */
    record TextEmbeddings(float[] context, int tokens, int width, float[] pooled, int pooledWidth)
            implements Conditioning {
        public TextEmbeddings {
            java.util.Objects.requireNonNull(context, "context");
            java.util.Objects.requireNonNull(pooled, "pooled");
            if (tokens < 0 || width < 1 || pooledWidth < 1 || pooled.length % pooledWidth != 0
                    || context.length != (long) pooled.length / pooledWidth * tokens * width) {
                throw new IllegalArgumentException("text embeddings of " + context.length + " context and "
                        + pooled.length + " pooled values do not make [n, " + tokens + ", " + width + "] and [n, "
                        + pooledWidth + "]");
            }
        }

        @Override
        public int size() {
            return pooled.length / pooledWidth;
        }
    }
}
