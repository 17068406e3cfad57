package io.ditserve.backend.java;

import io.ditserve.backend.ForwardBatch;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Runs the pixel-tiny fixture's forward case and the vae-small fixture's decode case on the java backend
 * {@code runs} times and writes the last outputs' float bits to a file. {@link InterpreterAgreementTest} runs it in
 * a JVM that only interprets ({@code -Xint}) and compares with the same computation after C2 has compiled it.
 */
public final class ForwardToFile {
    private ForwardToFile() {}

    public static void main(String[] args) throws Exception {
        Path repo = Path.of(args[0]);
        Path out = Path.of(args[1]);
        int runs = Integer.parseInt(args[2]);
        Files.write(out, compute(repo, runs));
    }

    static byte[] compute(Path repo, int runs) throws Exception {
        Path model = repo.resolve("tools/fixtures/pixel-tiny");
        Path vae = repo.resolve("tools/fixtures/vae-small");
        try (Safetensors cases = Safetensors.open(model.resolve("cases.safetensors"));
                Safetensors dcases = Safetensors.open(vae.resolve("cases.safetensors"));
                Backend b = new JavaBackendProvider().create(ModelConfigs.load(model), BackendOptions.ofThreads(2));
                Decoder d = new JavaBackendProvider().createDecoder(DecoderConfigs.load(vae),
                        BackendOptions.ofThreads(2))) {
            Tensor x = cases.tensor("forward.x");
            float[] t = io.ditserve.backend.testkit.Fixtures.times(cases, "forward.t");
            int[] y = ints(cases.longs("forward.y"));
            Tensor o = cases.tensor("forward.out");
            Tensor fo = Tensor.zeros(o.shape());
            Tensor latent = dcases.tensor("decode.latent");
            Tensor img = Tensor.zeros(dcases.tensor("decode.image").shape());
            for (int i = 0; i < runs; i++) {
                b.forward(ForwardBatch.ofLabels(x, t, y), fo, () -> false);
                d.decode(latent, img, () -> false);
            }
            ByteBuffer bb = ByteBuffer.allocate(4 * (fo.size() + img.size())).order(ByteOrder.LITTLE_ENDIAN);
            bb.asFloatBuffer().put(fo.data()).put(img.data());
            return bb.array();
        }
    }

    private static int[] ints(long[] v) {
        int[] r = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            r[i] = (int) v[i];
        }
        return r;
    }

}
