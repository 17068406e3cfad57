package io.ditserve.client;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Status;
import org.junit.jupiter.api.Test;

/**
 * Which failures {@link DitClient#generateResumable} sends again. The resume itself runs against real replicas
 * behind nginx in tools/lb_test.sh (kill -9 of the replica under a stream).
 */
class ResumableTest {
    @Test
    void transportCutsAreResumedServerFailuresAreNot() {
        assertThat(DitClient.cutByTransport(Status.UNAVAILABLE.withDescription("io exception"))).isTrue();
        assertThat(DitClient.cutByTransport(Status.INTERNAL.withDescription(
                "RST_STREAM closed stream. HTTP/2 error code: INTERNAL_ERROR"))).isTrue();
        assertThat(DitClient.cutByTransport(Status.INTERNAL.withDescription("backend 'java' failed: boom"))).isFalse();
        assertThat(DitClient.cutByTransport(Status.INTERNAL)).isFalse();
        assertThat(DitClient.cutByTransport(Status.INVALID_ARGUMENT.withDescription("steps: 0"))).isFalse();
        assertThat(DitClient.cutByTransport(Status.CANCELLED)).isFalse();
    }
}
