package io.ditserve.server.model;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.PipelineConfigs;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.TextEncoderConfigs;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.text.Tokenizer;
import io.ditserve.backend.text.Tokenizers;
import java.util.ArrayList;
import java.util.List;

/**
 * Loads a text-to-image pipeline folder (docs/TEXT_MODELS.md) on one backend: tokenizers and text encoders, the
 * MMDiT transformer and, for a latent pipeline, the VAE. Everything is checked before anything big loads: the
 * index, the configs, the tokenizers (small) first, then the weights.
 */
final class PipelineLoader {
    /** The prompt cache of each pipeline: 64 MB (SD3's context is 5.4 MB per prompt, the shapes model's 8 KB). */
    static final long PROMPT_CACHE_BYTES = 64L << 20;

    private PipelineLoader() {}

    /** The transformer's learned parameters: every tensor but the stored position table. */
    static long parameters(ModelSpec spec) {
        long n = 0;
        for (var e : io.ditserve.backend.MmditCheckpoint.expectedShapes(spec).entrySet()) {
            if (!e.getKey().equals("pos_embed.pos_embed")) {
                long k = 1;
                for (long d : e.getValue()) {
                    k *= d;
                }
                n += k;
            }
        }
        return n;
    }

    static LoadedModel load(PipelineConfigs.PipelineSpec p, BackendProvider provider, BackendOptions options,
            TextPipeline.CacheListener cacheListener) throws BackendException {
        // tokenizers first: SD3 pads every CLIP tokenizer to the first one's length
        Tokenizer first = Tokenizers.load(p.clips().getFirst().tokenizerDir(), 0);
        int clipTokens = first.maxLength();
        List<Tokenizer> clipTokenizers = new ArrayList<>();
        List<TextEncoderSpec> clipSpecs = new ArrayList<>();
        for (PipelineConfigs.Encoder e : p.clips()) {
            clipTokenizers.add(e == p.clips().getFirst() ? first : Tokenizers.load(e.tokenizerDir(), clipTokens));
            clipSpecs.add(TextEncoderConfigs.load(e.encoderDir(), e.role(), clipTokens));
        }
        int t5Tokens = p.maxSequenceLength();
        Tokenizer t5Tokenizer = p.t5() == null ? null : Tokenizers.load(p.t5().tokenizerDir(), t5Tokens);
        TextEncoderSpec t5Spec = p.t5() == null ? null
                : TextEncoderConfigs.load(p.t5().encoderDir(), p.t5().role(), t5Tokens);
        DecoderSpec vae = p.vae() == null ? null : DecoderConfigs.load(p.vae());
        ModelSpec.Space space = vae == null ? ModelSpec.Space.PIXEL : ModelSpec.Space.LATENT;
        ModelSpec.Defaults defaults = new ModelSpec.Defaults(Sampler.EULER, p.steps(), p.guidance(), 0.0, null,
                p.shift(), ModelSpec.Grid.FLOW_MATCH_EULER);
        ModelSpec spec = ModelConfigs.loadMmdit(p.transformerDir(), p.name(), p.description(), space,
                clipTokens + t5Tokens, defaults);
        int pooled = clipSpecs.stream().mapToInt(TextEncoderSpec::projectionDim).sum();
        if (pooled != spec.text().pooledProjectionDim()) {
            throw new BackendException(p.directory() + ": the CLIP projections give " + pooled + " pooled values; the"
                    + " transformer takes pooled_projection_dim " + spec.text().pooledProjectionDim());
        }
        if (vae != null && vae.latentChannels() != spec.inChannels()) {
            throw new BackendException(p.vae() + ": latent_channels " + vae.latentChannels() + " differs from the "
                    + "transformer's in_channels " + spec.inChannels());
        }
        List<TextPipeline.Encoder> encoders = new ArrayList<>();
        Backend backend = null;
        Decoder decoder = null;
        try {
            for (int i = 0; i < clipSpecs.size(); i++) {
                encoders.add(new TextPipeline.Encoder(provider.createTextEncoder(clipSpecs.get(i), options),
                        clipTokenizers.get(i)));
            }
            TextPipeline.Encoder t5 = null;
            if (t5Spec != null) {
                t5 = new TextPipeline.Encoder(provider.createTextEncoder(t5Spec, options), t5Tokenizer);
                encoders.add(t5);
            }
            TextPipeline text = new TextPipeline(encoders.subList(0, clipSpecs.size()), t5,
                    spec.text().jointAttentionDim(), t5Tokens, p.negativePrompt(), PROMPT_CACHE_BYTES, cacheListener);
            backend = provider.create(spec, options);
            if (vae != null) {
                decoder = provider.createDecoder(vae, options);
            }
            return new LoadedModel(spec, backend, parameters(spec), decoder, null, text);
        } catch (BackendException | RuntimeException e) {
            if (backend != null) {
                backend.close();
            }
            encoders.forEach(x -> x.encoder().close());
            throw e;
        }
    }
}
