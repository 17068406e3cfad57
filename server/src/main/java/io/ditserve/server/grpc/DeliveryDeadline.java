package io.ditserve.server.grpc;

import jakarta.inject.Qualifier;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * How long a generation's results may wait, after it has finished, for a client that does not read them
 * ({@code delivery_deadline_seconds}): then the call ends with DEADLINE_EXCEEDED saying so and its results are
 * dropped, so a client that never reads cannot hold finished results in server memory.
 */
@Qualifier
@Retention(RetentionPolicy.RUNTIME)
@Target({ElementType.PARAMETER, ElementType.METHOD, ElementType.FIELD})
public @interface DeliveryDeadline {}
