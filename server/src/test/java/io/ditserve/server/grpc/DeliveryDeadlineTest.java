package io.ditserve.server.grpc;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.server.TestServers;
import io.ditserve.server.config.ServerConfig;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A client that opens a generation and never reads the results cannot hold them in server memory (issue 26
 * item 2): once the generation has finished, its results wait at most delivery_deadline_seconds; then the call ends
 * with DEADLINE_EXCEEDED saying why, counted, and what waited is dropped.
 */
class DeliveryDeadlineTest {
    @Test
    void finishedResultsThatAreNotReadAreDroppedAfterTheDeliveryDeadline() throws Exception {
        ServerConfig c = TestServers.config();
        c.deliveryDeadlineSeconds = 1;
        try (TestServers.Running r = TestServers.inProcess(c)) {
            CompletableFuture<Throwable> end = new CompletableFuture<>();
            ClientCallStreamObserver<?>[] call = new ClientCallStreamObserver<?>[1];
            DiffusionServiceGrpc.newStub(r.channel()).generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                    .setClassId(1).setSteps(4).setNumImages(4).build(),
                    new ClientResponseObserver<GenerateRequest, GenerateEvent>() {
                        @Override
                        public void beforeStart(ClientCallStreamObserver<GenerateRequest> rs) {
                            call[0] = rs;
                            rs.disableAutoRequestWithInitial(1); // reads Accepted, then never again
                        }

                        @Override
                        public void onNext(GenerateEvent value) {}

                        @Override
                        public void onError(Throwable t) {
                            end.complete(t);
                        }

                        @Override
                        public void onCompleted() {
                            end.complete(null);
                        }
                    });
            // the generation finishes while its results wait unread; a second after that the server ends the call
            // and counts it DEADLINE_EXCEEDED
            assertThat(r.server().metrics().awaitRequests("pixel-tiny", "DEADLINE_EXCEEDED", 1,
                    java.time.Duration.ofSeconds(60))).as("the call ended by the delivery deadline").isTrue();
            call[0].request(Integer.MAX_VALUE); // too late: only the status is left to read
            Throwable t = end.get(30, TimeUnit.SECONDS);
            assertThat(t).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
                assertThat(e.getStatus().getDescription()).contains("not read within 1 s")
                        .contains("delivery_deadline_seconds");
            });
        }
    }
}
