package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Safetensors;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Safetensors (the api module's reader) on a file over 2 GB: a tensor whose data lies past 2^31 reads back. The
 * file is sparse, so it takes no disk space beyond a few blocks.
 */
class LargeSafetensorsTest {
    @TempDir
    Path dir;

    @Test
    void readsTensorBeyondTwoGigabytes() throws Exception {
        Path file = dir.resolve("big.safetensors");
        long begin = (1L << 31) + 4096; // relative to the start of the data region
        float[] values = {1.5f, -2.25f, 3e-7f, 65504f};
        String header = "{\"far\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[" + begin + ","
                + (begin + 16) + "]}}";
        byte[] json = header.getBytes(StandardCharsets.UTF_8);
        long dataStart = 8 + json.length;
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.setLength(2_200_000_000L);
            ByteBuffer head = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(json.length);
            raf.write(head.array());
            raf.write(json);
            ByteBuffer data = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN);
            for (float v : values) {
                data.putFloat(v);
            }
            raf.seek(dataStart + begin);
            raf.write(data.array());
        }
        try (Safetensors st = Safetensors.open(file)) {
            Safetensors.Entry e = st.expect("far", 2, 2);
            assertThat(e.offset()).isGreaterThan(Integer.MAX_VALUE);
            assertThat(st.floats("far")).containsExactly(values);
        }
    }
}
