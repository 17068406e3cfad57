package io.ditserve.backend.onnx;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtException;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderArguments;
import io.ditserve.backend.DecoderCheckpoint;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.onnx.OnnxRunner.Dim;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.util.HashMap;
import java.util.Map;
import java.util.Objects;
import java.util.List;

/**
 * A latent decoder on ONNX Runtime (docs/DECODERS.md). Its graph is the folder's {@code decoder.onnx} when there is
 * one (exported by tools/dit/vae.py or tools/convert.py: it wins, so an exported graph is run as given); otherwise an
 * AutoencoderKL's graph is built at load from {@code config.json} and the safetensors file ({@link VaeDecoderGraph},
 * weights read in place as external data, validated first by {@link DecoderCheckpoint#resolve} as on the java
 * backend), which is how a diffusers {@code vae/} folder as downloaded (SD3's) runs here; an AutoencoderTiny still
 * needs its decoder.onnx. I/O contract either way: input {@code latent} float32 [N, C_latent, h, w], output
 * {@code image} float32 [N, C_out, f·h, f·w], with N, h and w dynamic. The graph includes the latent scaling, so it
 * keeps the {@link Decoder} contract (diffusion-space latent in, image in [−1, 1] out). Checked at load against the
 * contract and the folder's {@code config.json}.
 */
final class OnnxDecoder implements Decoder {
    private static final String LATENT = "latent";
    private static final String IMAGE = "image";

    private final DecoderSpec spec;
    private final OnnxRunner runner;
    /** What the graph cache did for this load ({@link GraphCache.Report#NONE} for an exported decoder.onnx). */
    private final GraphCache.Report cacheReport;
    // direct I/O buffers grown to the largest call seen, then reused
    private FloatBuffer latentBuffer;
    private FloatBuffer imageBuffer;
    private boolean closed;

    private OnnxDecoder(DecoderSpec spec, OnnxRunner runner, GraphCache.Report cacheReport) {
        this.spec = spec;
        this.runner = runner;
        this.cacheReport = cacheReport;
    }

    static OnnxDecoder create(DecoderSpec spec, BackendOptions options) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        String thread = spec.directory().getFileName().toString();
        boolean build = !Files.exists(spec.onnxFile()) && spec.kind() == DecoderSpec.Kind.FULL;
        if (build) {
            return createBuilt(spec, options);
        }
        return checked(spec, OnnxRunner.open(spec.onnxFile(), options,
                "the onnx backend needs an AutoencoderTiny decoder exported with tools/convert.py --vae or "
                        + "tools/dit/vae.py", thread), GraphCache.Report.NONE);
    }

    /**
     * The AutoencoderKL graph built from the folder's config and weights (or the graph cache's copy of it), even
     * where a decoder.onnx lies beside.
     */
    static OnnxDecoder createBuilt(DecoderSpec spec, BackendOptions options) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        GraphCache.Loaded loaded = GraphCache.open("vae-decoder", spec, spec.directory(), options,
                spec.directory().getFileName().toString(), () -> build(spec));
        return checked(spec, loaded.runner(), loaded.report());
    }

    /** What the graph cache did for this load. */
    GraphCache.Report cacheReport() {
        return cacheReport;
    }

    private static OnnxDecoder checked(DecoderSpec spec, OnnxRunner runner, GraphCache.Report report)
            throws BackendException {
        try {
            runner.checkNames(List.of(LATENT), List.of(IMAGE));
            Map<String, NodeInfo> in = runner.inputInfo();
            Map<String, NodeInfo> out = runner.outputInfo();
            runner.checkTensor("input", in.get(LATENT), OnnxJavaType.FLOAT, "[N, C_latent, h, w]",
                    new Dim("channels (latent_channels)", spec.latentChannels()),
                    new Dim("rows h", -1), new Dim("columns w", -1));
            runner.checkTensor("output", out.get(IMAGE), OnnxJavaType.FLOAT, "[N, C_out, f·h, f·w]",
                    new Dim("channels (out_channels)", spec.outChannels()),
                    new Dim("rows f·h", -1), new Dim("columns f·w", -1));
            return new OnnxDecoder(spec, runner, report);
        } catch (BackendException | RuntimeException e) {
            runner.close();
            throw e;
        }
    }

    /** The AutoencoderKL graph of the folder's config and weights, after validating the weights. */
    private static GraphCache.Built build(DecoderSpec spec) throws BackendException {
        Map<String, GraphWeights.Stored> stored = new HashMap<>();
        try (Safetensors st = Safetensors.open(spec.weightsFile())) {
            for (Map.Entry<String, String> e : DecoderCheckpoint.resolve(st, spec).entrySet()) {
                stored.put(e.getKey(), new GraphWeights.Stored(st.file(), st.entry(e.getValue())));
            }
        }
        OnnxGraph g = new OnnxGraph("vae_decoder");
        GraphWeights w = new GraphWeights(g, spec.directory(), stored);
        byte[] model = VaeDecoderGraph.build(spec, g, w);
        return new GraphCache.Built(model, w.summary(), g.nodeCount());
    }

    /** What the graph reads from the folder's files as external data (empty for an exported decoder.onnx). */
    ExternalData.Summary externalData() {
        return runner.externalData;
    }

    @Override
    public String backendName() {
        return OnnxBackendProvider.NAME;
    }

    @Override
    public DecoderSpec spec() {
        return spec;
    }

    @Override
    public synchronized void decode(Tensor latent, Tensor out, Cancellation cancel) throws BackendException {
        int n = DecoderArguments.checkOpen(closed, spec, latent, out);
        if (n == 0) {
            return;
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
        if (latentBuffer == null || latentBuffer.capacity() < latent.size()) {
            latentBuffer = OnnxRunner.directBytes(4L * latent.size()).asFloatBuffer();
        }
        if (imageBuffer == null || imageBuffer.capacity() < out.size()) {
            imageBuffer = OnnxRunner.directBytes(4L * out.size()).asFloatBuffer();
        }
        latentBuffer.clear().put(0, latent.data()).limit(latent.size());
        imageBuffer.clear().limit(out.size());
        long[] outShape = OnnxRunner.longs(out.shape());
        try (OnnxTensor in = OnnxTensor.createTensor(runner.env, latentBuffer, OnnxRunner.longs(latent.shape()));
                OnnxTensor img = OnnxTensor.createTensor(runner.env, imageBuffer, outShape)) {
            runner.run(Map.of(LATENT, in), IMAGE, img, outShape, cancel);
        } catch (OrtException e) {
            throw new BackendException(runner.file + ": cannot create the run's tensors: " + e.getMessage(), e);
        }
        imageBuffer.get(0, out.data());
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            latentBuffer = null;
            imageBuffer = null;
            runner.close();
        }
    }
}
