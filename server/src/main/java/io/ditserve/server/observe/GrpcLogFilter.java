package io.ditserve.server.observe;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.time.Duration;
import java.util.logging.Filter;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.slf4j.LoggerFactory;

/**
 * gRPC logs a WARNING with a full stack trace ("Exception processing message", about 18 lines) for every request
 * message a client declares over {@code max_inbound_message_bytes}: a client that sends such messages in a loop
 * writes the log full. This filter takes those records off gRPC's (java.util.logging) logger and writes one line
 * per minute through ours instead, with the count of the others ({@link LogLimiter}); the client still gets
 * RESOURCE_EXHAUSTED from gRPC. Every other record of that logger passes unchanged.
 */
public final class GrpcLogFilter implements Filter {
    /** The logger of grpc-netty-shaded's server stream (where the record comes from). */
    static final String LOGGER = "io.grpc.netty.shaded.io.grpc.netty.NettyServerStream";
    /** Held strongly: java.util.logging keeps loggers weakly, and a collected logger would lose the filter. */
    private static final Logger GRPC = Logger.getLogger(LOGGER);
    private static final org.slf4j.Logger log = LoggerFactory.getLogger(GrpcLogFilter.class);

    private final Filter previous;
    private final LogLimiter limiter = new LogLimiter(Duration.ofMinutes(1));

    private GrpcLogFilter(Filter previous) {
        this.previous = previous;
    }

    /** Installs the filter once per JVM (servers in one process share gRPC's logger). */
    public static synchronized void install() {
        if (!(GRPC.getFilter() instanceof GrpcLogFilter)) {
            GRPC.setFilter(new GrpcLogFilter(GRPC.getFilter()));
        }
    }

    @Override
    public boolean isLoggable(LogRecord r) {
        if (r.getThrown() instanceof StatusRuntimeException e
                && e.getStatus().getCode() == Status.Code.RESOURCE_EXHAUSTED) {
            String suffix = limiter.admit("oversize");
            if (suffix != null) {
                log.warn("a request message over max_inbound_message_bytes was refused (RESOURCE_EXHAUSTED): {}{}",
                        e.getStatus().getDescription(), suffix);
            }
            return false;
        }
        return previous == null || previous.isLoggable(r);
    }
}
