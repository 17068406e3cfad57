package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DecoderSpec;
import java.util.EnumMap;
import java.util.Map;

/**
 * The device buffers of a latent decoder ({@link DecoderProgram}), sized for runs of up to {@link #samples} samples
 * of latents with up to {@link #pixels} positions (h·w), all in one allocation: offset and length of each in floats,
 * each on a 256-byte boundary. Sized at the first decode and reused; a larger latent or batch makes a new layout.
 *
 * <p>Memory stays bounded whatever the batch: a decode runs its batch in runs of at most
 * {@link #samplesPerRun} samples (each activation buffer within {@link Budgets#activation}); the im2col columns are
 * built in tiles that fit {@link Budgets#columns} (a whole run, groups of samples, or pixel ranges of one sample);
 * the attention scores in chunks that fit {@link Budgets#scores} (groups of samples or of query rows).
 */
final class DecoderBuffers implements PassMemory.Layout {
    /** What each buffer holds, for a run of S samples (C = the widest activation of the network). */
    enum Buffer {
        LATENT, // [S, C_latent, h, w] the latent as the caller gives it
        X, // [S, C, H, W] activation: the running value ("x" of the layers; the three rotate roles)
        H1, // [S, C, H, W] activation: normalised input of a convolution, attention output
        H2, // [S, C, H, W] activation: convolution output, packed q | k | v [S, 3C, h·w]
        COL, // im2col columns of one tile [samples or 1, C_in·9, pixels]
        SCORES // attention probabilities of one chunk [samples, T, T] or [rows, T]
    }

    /** Sizes in floats: of each activation buffer, of the im2col workspace, of the scores. */
    record Budgets(long activation, long columns, long scores) {
        Budgets {
            if (activation < 1 || columns < 1 || scores < 1 || activation > LaunchConfig.MAX_ELEMENTS
                    || columns > LaunchConfig.MAX_ELEMENTS || scores > LaunchConfig.MAX_ELEMENTS) {
                throw new IllegalArgumentException("budgets " + activation + ", " + columns + ", " + scores
                        + " outside 1.." + LaunchConfig.MAX_ELEMENTS);
            }
        }
    }

    /** 1 GiB per activation buffer, 128 MiB of im2col columns, 256 MiB of attention scores. */
    static final Budgets DEFAULT_BUDGETS = new Budgets(1L << 28, 1L << 25, ActivationLayout.SCORES_BUDGET);

    /**
     * What one sample needs, in floats, for a latent of {@code pixels} = h·w positions: the latent, the widest
     * activation (q | k | v included), all im2col columns of the largest 3×3 convolution, the largest column height
     * (C_in·9: one pixel's columns), the attention scores (T² with T = h·w; 0 without attention), the output image.
     */
    record Needs(long latent, long activation, long columns, long columnRows, long scores, long output) {}

    static Needs needs(DecoderSpec spec, long pixels) {
        long hw = pixels;
        long act = spec.latentChannels() * hw;
        long cols = 0;
        long colRows = 0;
        long scores = 0;
        int f = spec.upsampling();
        if (spec.kind() == DecoderSpec.Kind.FULL) {
            int top = spec.upBlockChannels(0);
            cols = Math.max(cols, spec.latentChannels() * 9L * hw); // conv_in
            colRows = Math.max(colRows, spec.latentChannels() * 9L);
            act = Math.max(act, top * hw);
            cols = Math.max(cols, top * 9L * hw); // mid-block resnets
            colRows = Math.max(colRows, top * 9L);
            if (spec.midBlockAttention()) {
                act = Math.max(act, 3L * top * hw);
                scores = hw * hw;
            }
            int prev = top;
            int stages = spec.blockOutChannels().size();
            for (int i = 0; i < stages; i++) {
                int out = spec.upBlockChannels(i);
                int widest = Math.max(prev, out);
                act = Math.max(act, widest * hw);
                cols = Math.max(cols, widest * 9L * hw);
                colRows = Math.max(colRows, widest * 9L);
                if (i < stages - 1) {
                    hw *= (long) f * f; // the upsampler's convolution runs at the new size
                    act = Math.max(act, out * hw);
                    cols = Math.max(cols, out * 9L * hw);
                }
                prev = out;
            }
            act = Math.max(act, spec.outChannels() * hw);
            cols = Math.max(cols, prev * 9L * hw); // conv_out
        } else {
            int c = spec.blockOutChannels().get(0);
            act = Math.max(act, c * hw);
            cols = Math.max(cols, spec.latentChannels() * 9L * hw);
            colRows = Math.max(spec.latentChannels(), c) * 9L;
            int stages = spec.numBlocks().size();
            for (int i = 0; i < stages; i++) {
                cols = Math.max(cols, c * 9L * hw);
                if (i < stages - 1) {
                    hw *= (long) f * f;
                    act = Math.max(act, c * hw);
                    cols = Math.max(cols, c * 9L * hw);
                }
            }
            act = Math.max(act, spec.outChannels() * hw);
        }
        return new Needs(spec.latentChannels() * pixels, act, cols, colRows, scores, spec.outChannels() * hw);
    }

    /**
     * How many samples of a latent with {@code pixels} positions one run takes: as many as fit the activation
     * budget, at least one, at most {@code wanted}. Fails when one sample alone is too large for the kernels.
     */
    static int samplesPerRun(DecoderSpec spec, long pixels, int wanted, Budgets budgets) throws BackendException {
        Needs n = needs(spec, pixels);
        long limit = LaunchConfig.MAX_ELEMENTS;
        if (n.activation() > limit) {
            throw new BackendException("a latent of " + pixels + " positions is too large for " + spec.summary()
                    + " on the cuda backend: one activation would hold " + n.activation() + " values (at most "
                    + limit + ")");
        }
        return (int) Math.max(1, Math.min(wanted, budgets.activation() / n.activation()));
    }

    private final int samples;
    private final long pixels;
    private final Map<Buffer, long[]> slots; // offset, length
    private final long totalElements;

    private DecoderBuffers(int samples, long pixels, Map<Buffer, long[]> slots, long totalElements) {
        this.samples = samples;
        this.pixels = pixels;
        this.slots = slots;
        this.totalElements = totalElements;
    }

    /** Buffers for runs of up to {@code samples} samples of latents with up to {@code pixels} positions. */
    static DecoderBuffers of(DecoderSpec spec, int samples, long pixels, Budgets budgets) {
        if (samples < 1 || pixels < 1) {
            throw new IllegalArgumentException("samples " + samples + ", pixels " + pixels);
        }
        Needs n = needs(spec, pixels);
        Map<Buffer, Long> len = new EnumMap<>(Buffer.class);
        len.put(Buffer.LATENT, samples * n.latent());
        for (Buffer b : new Buffer[] {Buffer.X, Buffer.H1, Buffer.H2}) {
            len.put(b, samples * n.activation());
        }
        // whole runs when they fit, else at least one pixel's columns
        len.put(Buffer.COL, Math.max(n.columnRows(), Math.min(budgets.columns(), samples * n.columns())));
        // at least one row of scores (T values); none without attention
        long t = n.scores() == 0 ? 0 : pixels;
        len.put(Buffer.SCORES, t == 0 ? 1 : Math.max(t, Math.min(budgets.scores(), samples * n.scores())));
        Map<Buffer, long[]> slots = new EnumMap<>(Buffer.class);
        long at = 0;
        for (Buffer b : Buffer.values()) {
            long l = len.get(b);
            if (l > LaunchConfig.MAX_ELEMENTS) {
                throw new IllegalArgumentException("decoder buffer " + b + " of " + l + " values (at most "
                        + LaunchConfig.MAX_ELEMENTS + ")");
            }
            slots.put(b, new long[] {at, l});
            at = (at + l + WeightLayout.ALIGN - 1) / WeightLayout.ALIGN * WeightLayout.ALIGN;
        }
        return new DecoderBuffers(samples, pixels, slots, at);
    }

    /** Samples per run. */
    int samples() {
        return samples;
    }

    /** Latent positions (h·w) per sample. */
    long pixels() {
        return pixels;
    }

    long offset(Buffer b) {
        return slots.get(b)[0];
    }

    long length(Buffer b) {
        return slots.get(b)[1];
    }

    long totalElements() {
        return totalElements;
    }

    @Override
    public long totalBytes() {
        return DevicePtr.floatBytes(totalElements);
    }

    /** The device addresses of the buffers in an allocation of {@link #totalBytes} at {@code base}. */
    Addresses at(DevicePtr base) {
        return new Addresses(this, base.plusFloats(offset(Buffer.LATENT)), base.plusFloats(offset(Buffer.X)),
                base.plusFloats(offset(Buffer.H1)), base.plusFloats(offset(Buffer.H2)),
                base.plusFloats(offset(Buffer.COL)), base.plusFloats(offset(Buffer.SCORES)));
    }

    /** Device addresses of the buffers of a layout (the tests may place each in its own allocation). */
    record Addresses(DecoderBuffers layout, DevicePtr latent, DevicePtr x, DevicePtr h1, DevicePtr h2, DevicePtr col,
            DevicePtr scores) {}
}
