// The container image's HEALTHCHECK: one grpc.health.v1 Check (the server's overall health, service "") over
// plaintext, to $DIT_HEALTH_TARGET (default localhost:50051). Exit 0 when SERVING, 1 otherwise (NOT_SERVING while
// draining, refused, or no answer within 5 s). Compiled into the image at /app/probe (see the Dockerfile).
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import java.util.concurrent.TimeUnit;

public final class HealthProbe {
    public static void main(String[] args) throws InterruptedException {
        String target = args.length > 0 ? args[0] : System.getenv().getOrDefault("DIT_HEALTH_TARGET", "localhost:50051");
        ManagedChannel channel = Grpc.newChannelBuilder(target, InsecureChannelCredentials.create()).build();
        int code;
        try {
            HealthCheckResponse.ServingStatus s = HealthGrpc.newBlockingStub(channel)
                    .withDeadlineAfter(5, TimeUnit.SECONDS).check(HealthCheckRequest.getDefaultInstance()).getStatus();
            System.out.println(target + ": " + s);
            code = s == HealthCheckResponse.ServingStatus.SERVING ? 0 : 1;
        } catch (StatusRuntimeException e) {
            System.out.println(target + ": " + e.getStatus());
            code = 1;
        }
        channel.shutdownNow().awaitTermination(1, TimeUnit.SECONDS);
        System.exit(code);
    }
}
