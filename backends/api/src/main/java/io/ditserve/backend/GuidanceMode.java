package io.ditserve.backend;

/** How classifier-free guidance combines the conditional and unconditional halves (docs/DIT_MODEL.md). */
public enum GuidanceMode {
    /** Released DiT: guide eps channels 0..2; channel 3 and the variance come from the conditional half. */
    FIRST_THREE("first3"),
    /** Guide all eps channels; the variance comes from the conditional half. */
    ALL("all");

    private final String configName;

    GuidanceMode(String configName) {
        this.configName = configName;
    }

    /** The name in config.json ({@code guidance_mode}). */
    public String configName() {
        return configName;
    }
}
