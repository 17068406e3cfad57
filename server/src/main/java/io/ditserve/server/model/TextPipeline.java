package io.ditserve.server.model;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.text.Tokenizer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * The prompt side of a text-to-image pipeline (docs/TEXT_MODELS.md): its tokenizers and text encoders, and the rule
 * that turns their outputs into the transformer's conditioning, as SD3's pipeline builds it:
 * <ul>
 *   <li>context [T, joint_attention_dim]: the CLIP encoders' hidden states (the penultimate layer) side by side on
 *       the channel axis, zero-padded on the right to joint_attention_dim, then on the sequence axis T5's last
 *       hidden state over max_sequence_length tokens, or as many zero rows without a T5 encoder;
 *   <li>pooled [Σ projection widths]: the CLIP encoders' projected pooled outputs side by side.
 * </ul>
 * Encoders run once per prompt, never per step; the result is kept in a cache bounded in bytes and keyed by the
 * exact prompt (one cache per pipeline, so the encoder set is part of the key), and a hit skips the encoders.
 */
public final class TextPipeline implements AutoCloseable {
    /** One encoder with its tokenizer. */
    public record Encoder(TextEncoder encoder, Tokenizer tokenizer) {
        public Encoder {
            Objects.requireNonNull(encoder, "encoder");
            Objects.requireNonNull(tokenizer, "tokenizer");
        }

        public TextEncoderSpec spec() {
            return encoder.spec();
        }
    }

    /** How one prompt tokenized with one encoder's tokenizer. */
    public record TokenInfo(String encoder, int tokens, int limit, boolean truncated) {}

    /** A prompt's conditioning: context [tokens, width] and pooled [pooledWidth]. */
    public record Embedding(String prompt, float[] context, float[] pooled, List<TokenInfo> tokens) {
        long bytes() {
            return 4L * (context.length + pooled.length) + 2L * prompt.length() + 64;
        }
    }

    /** Hits and misses of the prompt cache, for metrics. */
    public interface CacheListener {
        void onLookup(boolean hit);
    }

    private final List<Encoder> clips;
    private final Encoder t5;
    private final int width;
    private final int pooledWidth;
    private final int t5Tokens;
    private final String defaultNegative;
    private final long cacheBytes;
    private final CacheListener listener;
    private final LinkedHashMap<String, Embedding> cache = new LinkedHashMap<>(16, 0.75f, true);
    private long cached;

    /**
     * @param clips the CLIP encoders in pipeline order (text_encoder, text_encoder_2)
     * @param t5 the T5 encoder, or null: then {@code t5Tokens} zero rows stand in for it
     * @param width joint_attention_dim of the transformer
     * @param cacheBytes the prompt cache's bound (0: no cache)
     */
    public TextPipeline(List<Encoder> clips, Encoder t5, int width, int t5Tokens, String defaultNegative,
            long cacheBytes, CacheListener listener) {
        this.clips = List.copyOf(clips);
        this.t5 = t5;
        this.width = width;
        this.t5Tokens = t5 != null ? t5.spec().maxTokens() : t5Tokens;
        this.defaultNegative = Objects.requireNonNull(defaultNegative, "defaultNegative");
        this.cacheBytes = cacheBytes;
        this.listener = listener == null ? hit -> { } : listener;
        if (clips.isEmpty()) {
            throw new IllegalArgumentException("a text pipeline needs at least one CLIP encoder");
        }
        int clipWidth = 0;
        int pooled = 0;
        for (Encoder e : clips) {
            clipWidth += e.spec().width();
            pooled += e.spec().projectionDim();
        }
        if (clipWidth > width || (t5 != null && t5.spec().width() != width)) {
            throw new IllegalArgumentException("the encoders' widths (CLIP " + clipWidth + (t5 == null ? ""
                    : ", T5 " + t5.spec().width()) + ") do not fit joint_attention_dim " + width);
        }
        this.pooledWidth = pooled;
    }

    /** Context tokens: the first CLIP tokenizer's length (SD3 pads every CLIP to it) plus the T5 part. */
    public int contextTokens() {
        return clipTokens() + t5Tokens;
    }

    private int clipTokens() {
        return clips.getFirst().tokenizer().maxLength();
    }

    public int width() {
        return width;
    }

    public int pooledWidth() {
        return pooledWidth;
    }

    public String defaultNegativePrompt() {
        return defaultNegative;
    }

    /** The encoders, CLIP first, then T5 when present. */
    public List<Encoder> encoders() {
        List<Encoder> all = new ArrayList<>(clips);
        if (t5 != null) {
            all.add(t5);
        }
        return all;
    }

    /** The prompt's conditioning, from the cache or by running the encoders (then cached). */
    public Embedding encode(String prompt, Cancellation cancel) throws BackendException {
        synchronized (cache) {
            Embedding e = cache.get(prompt);
            listener.onLookup(e != null);
            if (e != null) {
                return e;
            }
        }
        Embedding e = run(prompt, cancel);
        if (e.bytes() <= cacheBytes) {
            synchronized (cache) {
                Embedding old = cache.put(prompt, e);
                cached += e.bytes() - (old == null ? 0 : old.bytes());
                var it = cache.entrySet().iterator();
                while (cached > cacheBytes && it.hasNext()) { // least recently used first
                    cached -= it.next().getValue().bytes();
                    it.remove();
                }
            }
        }
        return e;
    }

    /** Bytes the cache holds now. */
    public long cachedBytes() {
        synchronized (cache) {
            return cached;
        }
    }

    private Embedding run(String prompt, Cancellation cancel) throws BackendException {
        int t = clipTokens();
        int tokens = contextTokens();
        float[] context = new float[tokens * width];
        float[] pooled = new float[pooledWidth];
        List<TokenInfo> info = new ArrayList<>();
        int channel = 0;
        int pooledAt = 0;
        for (Encoder e : clips) {
            Tokenizer.Tokens ids = tokens(e, prompt, t, info);
            TextEncoder.Output out = e.encoder().encode(new int[][] {ids.ids()}, cancel);
            int h = out.width();
            for (int k = 0; k < t; k++) {
                System.arraycopy(out.hidden(), k * h, context, k * width + channel, h);
            }
            System.arraycopy(out.pooled(), 0, pooled, pooledAt, out.pooled().length);
            channel += h;
            pooledAt += out.pooled().length;
        }
        if (t5 != null) {
            Tokenizer.Tokens ids = tokens(t5, prompt, t5Tokens, info);
            TextEncoder.Output out = t5.encoder().encode(new int[][] {ids.ids()}, cancel);
            System.arraycopy(out.hidden(), 0, context, t * width, t5Tokens * width);
        }
        return new Embedding(prompt, context, pooled, List.copyOf(info));
    }

    private static Tokenizer.Tokens tokens(Encoder e, String prompt, int length, List<TokenInfo> info) {
        Tokenizer.Tokens ids = e.tokenizer().encode(prompt);
        if (ids.ids().length != length) {
            throw new IllegalStateException(e.spec().role() + "'s tokenizer gives " + ids.ids().length
                    + " ids; the pipeline takes " + length);
        }
        info.add(new TokenInfo(e.spec().role(), ids.count(), length, ids.truncated()));
        return ids;
    }

    @Override
    public void close() {
        for (Encoder e : encoders()) {
            e.encoder().close();
        }
    }
}
