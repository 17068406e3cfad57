package io.ditserve.client;

import com.google.protobuf.ByteString;
import io.ditserve.proto.v1.FloatTensor;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code ./dit generate --initial-noise FILE}: the starting noise of a generation from a file in the form this
 * command writes its tensors ({@link GenerationWriter}): little-endian float32 values, row-major, with the shape in
 * the name ({@code NAME.CxHxW.f32} for one image, {@code NAME.NxCxHxW.f32} for N). With it a generation can be
 * compared bit for bit with another implementation that starts from the same noise (README, "Reproducibility").
 */
final class NoiseFile {
    private NoiseFile() {}

    private static final Pattern SHAPE = Pattern.compile("\\.(\\d+(?:x\\d+){2,3})\\.f32$");
    /** Largest file read (the server's own limit on initial_noise is smaller; this only bounds the read). */
    static final long MAX_BYTES = 1L << 30;

    /** The tensor of {@code file} as the request's {@code initial_noise}: shape [N, C, H, W]. */
    static FloatTensor read(Path file) throws IOException {
        Matcher m = SHAPE.matcher(file.getFileName().toString());
        if (!m.find()) {
            throw new IllegalArgumentException("--initial-noise " + file + ": the name must end in .CxHxW.f32 or "
                    + ".NxCxHxW.f32 (the shape, as ./dit generate --format tensor writes it)");
        }
        List<Integer> shape = new ArrayList<>();
        long values = 1;
        for (String d : m.group(1).split("x")) {
            int v = Integer.parseInt(d);
            if (v <= 0) {
                throw new IllegalArgumentException("--initial-noise " + file + ": dimension " + v + " in the name");
            }
            shape.add(v);
            values *= v;
        }
        if (shape.size() == 3) {
            shape.addFirst(1);
        }
        long size = Files.size(file);
        if (size != values * 4 || size > MAX_BYTES) {
            throw new IllegalArgumentException("--initial-noise " + file + ": " + size + " bytes, but shape "
                    + shape + " needs " + values * 4 + " (float32)");
        }
        return FloatTensor.newBuilder().addAllShape(shape).setData(ByteString.readFrom(Files.newInputStream(file)))
                .build();
    }
}
