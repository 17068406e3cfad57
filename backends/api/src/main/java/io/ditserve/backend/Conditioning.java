package io.ditserve.backend;

import java.util.Arrays;

/**
 * What each sample of a forward pass is conditioned on, as data: the transformer receives it beside x and the time.
 * Sealed, so that a backend's forward program switches over every kind it may be given and the compiler checks that
 * none is forgotten. Class-conditional families (DiT, SiT, REPA) take {@link ClassLabels}; text-to-image families
 * (issue 24) add a kind carrying token embeddings with a mask and a pooled vector.
 */
public sealed interface Conditioning permits Conditioning.ClassLabels {

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
}
