package io.ditserve.server.engine;

/**
 * @param maxActive generations that step concurrently (round robin, one denoising step each in turn)
 * @param maxQueued generations that may wait for a slot; beyond that a request gets RESOURCE_EXHAUSTED
 */
public record EngineConfig(int maxActive, int maxQueued) {
    public EngineConfig {
        if (maxActive < 1 || maxQueued < 0) {
            throw new IllegalArgumentException("maxActive must be >= 1 and maxQueued >= 0");
        }
    }
}
