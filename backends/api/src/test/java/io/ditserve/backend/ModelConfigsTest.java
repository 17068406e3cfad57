package io.ditserve.backend;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** config.json is read strictly: every key known, the format version checked, the process consistent. */
class ModelConfigsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    @TempDir
    Path dir;

    /** A format-1 DiT config as tools/dit/export.py writes it. */
    private static ObjectNode dit() {
        ObjectNode c = JSON.createObjectNode();
        c.put("format_version", 1).put("name", "m").put("description", "d").put("input_size", 16)
                .put("patch_size", 2).put("in_channels", 4).put("hidden_size", 64).put("depth", 2)
                .put("num_heads", 2).put("mlp_ratio", 4.0).put("class_dropout_prob", 0.1).put("num_classes", 10)
                .put("learn_sigma", true).put("space", "latent").put("guidance_mode", "first3")
                .put("variance", "learned_range");
        c.putObject("schedule").put("type", "linear").put("beta_start", 0.0001).put("beta_end", 0.02)
                .put("num_train_timesteps", 1000).put("respacing", "dit");
        c.putObject("defaults").put("sampler", "ddim").put("steps", 50).put("guidance", 4.0).put("eta", 0.0);
        return c;
    }

    /** A format-2 REPA config as tools/convert.py --family repa writes it. */
    private static ObjectNode repa() {
        ObjectNode c = dit();
        c.put("format_version", 2).put("family", "repa").put("learn_sigma", false).put("guidance_mode", "all")
                .put("qk_norm", true);
        c.remove("schedule");
        c.remove("variance");
        c.putObject("process").put("prediction", "velocity").put("path", "linear").put("time_input", "s")
                .put("velocity", "noise_minus_data");
        ObjectNode d = c.putObject("defaults").put("sampler", "euler_maruyama").put("steps", 250)
                .put("guidance", 1.8);
        ArrayNode gi = d.putArray("guidance_interval");
        gi.add(0.0).add(0.7);
        return c;
    }

    private ModelSpec load(ObjectNode c) throws Exception {
        Files.writeString(dir.resolve("config.json"), JSON.writeValueAsString(c));
        return ModelConfigs.load(dir);
    }

    private String error(ObjectNode base, Consumer<ObjectNode> change) {
        change.accept(base);
        return org.junit.jupiter.api.Assertions.assertThrows(BackendException.class, () -> load(base)).getMessage();
    }

    @Test
    void aFormatOneDitFolderLoadsAsBefore() throws Exception {
        ModelSpec s = load(dit());
        assertThat(s.process()).isEqualTo(ModelSpec.Process.DIT);
        assertThat(s.family()).isEqualTo("dit");
        assertThat(s.qkNorm()).isFalse();
        assertThat(s.defaults().sampler()).isEqualTo(Sampler.DDIM);
        assertThat(s.defaults().guidanceInterval()).isNull();
        assertThat(s.defaults().timestepShift()).isEqualTo(1.0);
    }

    @Test
    void aFormatTwoFlowFolderStatesItsProcess() throws Exception {
        ModelSpec s = load(repa());
        assertThat(s.process()).isEqualTo(ModelSpec.Process.REPA);
        assertThat(s.process().flow()).isTrue();
        assertThat(s.process().networkTime(0.25)).isEqualTo(0.25);
        assertThat(s.process().derivativeSign()).isEqualTo(1f);
        assertThat(s.qkNorm()).isTrue();
        assertThat(s.defaults().sampler()).isEqualTo(Sampler.EULER_MARUYAMA);
        assertThat(s.defaults().guidanceInterval()).isEqualTo(new ModelSpec.GuidanceInterval(0.0, 0.7));
        ObjectNode sit = repa();
        ((ObjectNode) sit.get("process")).put("time_input", "1-s").put("velocity", "data_minus_noise");
        sit.put("family", "sit");
        ModelSpec t = load(sit);
        assertThat(t.process()).isEqualTo(ModelSpec.Process.SIT);
        assertThat(t.process().networkTime(0.25)).isEqualTo(0.75);
        assertThat(t.process().derivativeSign()).isEqualTo(-1f);
    }

    @Test
    void anUnknownKeyIsAnErrorNamingTheKnownOnes() {
        assertThat(error(dit(), c -> c.put("schedul", "x")))
                .contains("unknown key 'schedul'").contains("known keys").contains("schedule").contains("num_heads");
        assertThat(error(dit(), c -> ((ObjectNode) c.get("defaults")).put("stepz", 3)))
                .contains("unknown key 'defaults.stepz'").contains("of 'defaults'").contains("steps");
        assertThat(error(repa(), c -> ((ObjectNode) c.get("process")).put("shift", 3)))
                .contains("unknown key 'process.shift'").contains("time_input");
        // format 1 has no process: the key is unknown there
        assertThat(error(dit(), c -> c.put("qk_norm", true))).contains("unknown key 'qk_norm'");
    }

    @Test
    void aWrongFormatVersionIsRefusedByName() {
        assertThat(error(dit(), c -> c.put("format_version", 3)))
                .contains("format_version 3 is not one this server reads (1..2)");
        assertThat(error(dit(), c -> c.put("format_version", "2"))).contains("'format_version' must be an integer");
    }

    @Test
    void anotherScheduleOrAMismatchedVarianceIsRefused() {
        assertThat(error(dit(), c -> ((ObjectNode) c.get("schedule")).put("type", "cosine")))
                .contains("'schedule.type' must be one of [linear]");
        assertThat(error(dit(), c -> ((ObjectNode) c.get("schedule")).put("beta_end", 0.012)))
                .contains("only DiT's schedule is implemented");
        assertThat(error(dit(), c -> c.put("variance", "fixed_small"))).contains("'variance' is fixed_small");
        assertThat(error(repa(), c -> c.put("variance", "fixed_small"))).contains("belongs to vp_linear models");
    }

    @Test
    void aSamplerThatDoesNotFitTheProcessIsRefusedNamingTheOnesItTakes() {
        assertThat(error(repa(), c -> ((ObjectNode) c.get("defaults")).put("sampler", "ddim")))
                .contains("'sampler' ddim cannot sample a linear model")
                .contains("[dpmpp_2m, euler, heun, euler_maruyama]");
        assertThat(error(dit(), c -> ((ObjectNode) c.get("defaults")).put("sampler", "heun")))
                .contains("'sampler' heun cannot sample a vp_linear model").contains("[ddpm, ddim, dpmpp_2m]");
    }

    @Test
    void anInconsistentProcessIsRefused() {
        assertThat(error(repa(), c -> ((ObjectNode) c.get("process")).put("prediction", "epsilon")))
                .contains("prediction epsilon does not go with path linear");
        assertThat(error(repa(), c -> ((ObjectNode) c.get("process")).remove("velocity")))
                .contains("must say which velocity");
        assertThat(error(repa(), c -> c.put("learn_sigma", true))).contains("learn_sigma must be false");
        assertThat(error(repa(), c -> ((ObjectNode) c.get("process")).put("time_input", "sigma")))
                .contains("'process.time_input' must be one of [index, s, 1-s]");
        assertThat(error(repa(), c -> c.put("family", "flux"))).contains("'family' must be one of");
    }
}
