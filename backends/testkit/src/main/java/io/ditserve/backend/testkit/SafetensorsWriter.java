package io.ditserve.backend.testkit;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Map;
import java.util.stream.Collectors;

/** Writes F32 safetensors files for tests that need a broken or unusual one. */
public final class SafetensorsWriter {
    private SafetensorsWriter() {}

    /** One F32 tensor: its shape and values (shape and length need not agree: tests write broken files too). */
    public record F32(long[] shape, float[] values) {}

    public static void write(Path file, Map<String, F32> tensors) throws IOException {
        StringBuilder header = new StringBuilder("{");
        long offset = 0;
        for (Map.Entry<String, F32> e : tensors.entrySet()) {
            long bytes = 4L * e.getValue().values().length;
            String shape = Arrays.stream(e.getValue().shape()).mapToObj(Long::toString)
                    .collect(Collectors.joining(","));
            header.append(header.length() > 1 ? "," : "").append('"').append(e.getKey()).append("\":{")
                    .append("\"dtype\":\"F32\",\"shape\":[").append(shape).append("],\"data_offsets\":[")
                    .append(offset).append(',').append(offset + bytes).append("]}");
            offset += bytes;
        }
        header.append('}');
        while ((header.length() + 8) % 8 != 0) {
            header.append(' '); // the format pads the header to a multiple of 8 bytes
        }
        byte[] json = header.toString().getBytes(StandardCharsets.UTF_8);
        ByteBuffer buf = ByteBuffer.allocate(Math.toIntExact(8 + json.length + offset)).order(ByteOrder.LITTLE_ENDIAN);
        buf.putLong(json.length).put(json);
        for (F32 t : tensors.values()) {
            for (float v : t.values()) {
                buf.putFloat(v);
            }
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            ch.write(buf.flip());
        }
    }
}
