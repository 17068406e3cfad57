package io.ditserve.server.engine;

import io.ditserve.backend.TiledDecoding;
import java.util.Objects;

/**
 * @param maxActive generations of one model that step together (each compute loop admits this many)
 * @param maxQueued generations of one model that may wait for a slot; beyond that a request gets RESOURCE_EXHAUSTED
 * @param maxBatch most samples in one forward pass (a tick whose generations hold more runs several passes); 0 =
 *     the default of the model's backend ({@link #maxBatchFor})
 * @param tiling when and how final images and previews are decoded in tiles
 * @param maxQueuedPerClient generations of one model that one client (see {@link Engine#submit}) may have waiting;
 *     0 = no per-client limit
 */
public record EngineConfig(int maxActive, int maxQueued, int maxBatch, TiledDecoding.Tiling tiling,
        int maxQueuedPerClient) {
    public EngineConfig {
        if (maxActive < 1 || maxQueued < 0 || maxBatch < 0 || maxQueuedPerClient < 0) {
            throw new IllegalArgumentException(
                    "maxActive must be >= 1, maxQueued, maxBatch and maxQueuedPerClient >= 0");
        }
        Objects.requireNonNull(tiling, "tiling");
    }

    /** Without a per-client limit. */
    public EngineConfig(int maxActive, int maxQueued, int maxBatch, TiledDecoding.Tiling tiling) {
        this(maxActive, maxQueued, maxBatch, tiling, 0);
    }

    public EngineConfig(int maxActive, int maxQueued) {
        this(maxActive, maxQueued, 0, TiledDecoding.Tiling.NEVER);
    }

    /**
     * The pass size for a backend: the configured one, else where the backend's measured per-sample cost stops
     * falling (README, "Batching across requests": java and onnx flatten from 8–16 samples on; cuda was still gaining
     * at 16, the largest batch measured on an H200, so 64 is a guess to check on a GPU).
     */
    public int maxBatchFor(String backend) {
        if (maxBatch > 0) {
            return maxBatch;
        }
        return switch (backend) {
            case "java" -> 32;
            case "cuda" -> 64;
            default -> 16;
        };
    }
}
