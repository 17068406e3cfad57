package io.ditserve.server.web;

import com.linecorp.armeria.server.ServiceRequestContext;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.ForwardingServerCallListener;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/**
 * Gives a web call the client's deadline ({@code grpc-timeout}) as the gRPC {@link Context}'s deadline, as the
 * gRPC port's transport does: Armeria enforces the timeout itself but leaves the Context without one, and the
 * service reads the Context's deadline to tell a call that ran out of time (DEADLINE_EXCEEDED) from one that its
 * client cancelled (CANCELLED).
 */
final class DeadlineInterceptor implements ServerInterceptor {
    private final ScheduledExecutorService scheduler;

    DeadlineInterceptor(ScheduledExecutorService scheduler) {
        this.scheduler = scheduler;
    }

    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers,
            ServerCallHandler<Q, R> next) {
        ServiceRequestContext ctx = ServiceRequestContext.currentOrNull();
        long timeoutMillis = ctx == null ? 0 : ctx.requestTimeoutMillis();
        if (timeoutMillis <= 0) {
            return next.startCall(call, headers);
        }
        Context.CancellableContext context = Context.current().withDeadlineAfter(timeoutMillis,
                TimeUnit.MILLISECONDS, scheduler);
        ServerCall.Listener<Q> listener = Contexts.interceptCall(context, call, headers, next);
        return new ForwardingServerCallListener.SimpleForwardingServerCallListener<>(listener) {
            @Override
            public void onComplete() {
                try {
                    super.onComplete();
                } finally {
                    context.cancel(null); // releases the deadline's timer
                }
            }

            @Override
            public void onCancel() {
                try {
                    super.onCancel();
                } finally {
                    context.cancel(null);
                }
            }
        };
    }
}
