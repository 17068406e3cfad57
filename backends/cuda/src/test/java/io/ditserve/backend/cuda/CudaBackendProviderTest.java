package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.testkit.DecoderFixtures;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.TextFixtures;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.ServiceLoader;
import org.junit.jupiter.api.Test;

/** Discovery is cheap, and on a machine without a usable GPU {@code create} fails fast, naming what is missing. */
class CudaBackendProviderTest {
    /** Loads this module's classes itself (child first), so that it can tell which of them were loaded. */
    static final class IsolatingLoader extends URLClassLoader {
        IsolatingLoader(URL classes, ClassLoader parent) {
            super(new URL[] {classes}, parent);
        }

        @Override
        protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
            synchronized (getClassLoadingLock(name)) {
                if (name.startsWith("io.ditserve.backend.cuda.")) {
                    Class<?> c = findLoadedClass(name);
                    return c != null ? c : findClass(name);
                }
                return super.loadClass(name, resolve);
            }
        }

        boolean loaded(String name) {
            return findLoadedClass(name) != null;
        }
    }

    @Test
    void discoveryAndDescriptionLoadNoNativeCode() throws Exception {
        URL classes = CudaBackendProvider.class.getProtectionDomain().getCodeSource().getLocation();
        try (IsolatingLoader loader = new IsolatingLoader(classes, getClass().getClassLoader())) {
            List<String> names = new ArrayList<>();
            for (BackendProvider p : ServiceLoader.load(BackendProvider.class, loader)) {
                if (p.getClass().getClassLoader() == loader) {
                    names.add(p.name());
                    assertThat(p.description()).contains("cuda.precision");
                    assertThat(p.requiredFiles()).containsExactly("weights.safetensors");
                }
            }
            assertThat(names).containsExactly("cuda");
            for (String c : List.of("NativeLibrary", "CudaLibraries", "CudaDriver", "Cublas", "Nvrtc", "CudaDevice")) {
                assertThat(loader.loaded("io.ditserve.backend.cuda." + c)).as(c + " loaded").isFalse();
            }
        }
    }

    private static boolean driverPresent() {
        List<String> problems = new ArrayList<>();
        return CudaLibraries.open(new NativeLibrary.Loader(), CudaLibraries.Lib.DRIVER,
                CudaLibraries.searchDirs(null, System.getenv(), Path.of("/")), problems) != null;
    }

    @Test
    void withoutADriverCreateFailsFastNamingWhatIsMissingAndWhere() throws Exception {
        assumeTrue(!driverPresent(), "a CUDA driver library is present: the no-GPU failure cannot be shown here");
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        long start = System.nanoTime();
        assertThatThrownBy(() -> new CudaBackendProvider().create(spec,
                        new BackendOptions(1, Map.of("cuda.lib_path", "/opt/my-cuda/lib"))))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining("the CUDA driver library (libcuda.so.1")
                .hasMessageContaining("/opt/my-cuda/lib (absent)")
                .hasMessageContaining("/usr/local/cuda/lib64")
                .hasMessageContaining("/usr/local/nvidia/lib64")
                .hasMessageContaining("system loader")
                .hasMessageContaining("DIT_CUDA_LIB_PATH")
                .satisfies(e -> System.out.println("cuda backend on this machine: " + e.getMessage()));
        assertThat((System.nanoTime() - start) / 1e9).as("seconds to fail").isLessThan(5.0);
    }

    @Test
    void badOptionsFailBeforeAnyLibraryIsLooked() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        assertThatThrownBy(() -> new CudaBackendProvider().create(spec,
                        new BackendOptions(1, Map.of("cuda.precision", "fp8"))))
                .isInstanceOf(BackendException.class).hasMessageContaining("[fp8]").hasMessageContaining("bf16");
    }

    @Test
    void aWeightsFileThatDoesNotMatchTheConfigFailsBeforeTheGpu() throws Exception {
        ModelSpec pixel = Fixtures.spec("pixel-tiny");
        ModelSpec latent = Fixtures.spec("latent-tiny");
        // latent-tiny's config with pixel-tiny's weights
        ModelSpec mismatched = new ModelSpec(pixel.directory(), "mismatched", "", latent.inputSize(),
                latent.patchSize(), latent.inChannels(), latent.hiddenSize(), latent.depth(), latent.numHeads(),
                latent.mlpRatio(), latent.numClasses(), latent.learnSigma(), latent.classNames(), latent.space(),
                latent.guidanceMode(), latent.defaults());
        assertThatThrownBy(() -> new CudaBackendProvider().create(mismatched, BackendOptions.ofThreads(1)))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining("weights.safetensors")
                .hasMessageContaining("expected");
    }

    /**
     * SD3's models go to their backends: an MMDiT spec to {@link CudaMmditBackend}, which reads the transformer
     * folder's files (a DiT backend would first ask for weights.safetensors), a text encoder spec to
     * {@link CudaTextEncoder}; without a GPU here the device is what fails.
     */
    @Test
    void sd3SpecsGoToTheirBackends() throws Exception {
        CudaBackendProvider p = new CudaBackendProvider();
        BackendOptions o = BackendOptions.ofThreads(1);
        madeOrTheDeviceFails(() -> p.create(TextFixtures.mmditSpec("mmdit-tiny"), o), CudaMmditBackend.class,
                CudaDitBackend.WEIGHTS_FILE);
        madeOrTheDeviceFails(() -> p.createTextEncoder(TextFixtures.encoderSpec("t5-tiny"), o), CudaTextEncoder.class,
                "cannot run text encoders");
    }

    private interface Make {
        AutoCloseable make() throws BackendException;
    }

    /** {@code make} gives a {@code type} (on a machine with a GPU), or fails for another reason than {@code not}. */
    private static void madeOrTheDeviceFails(Make make, Class<?> type, String not) throws Exception {
        try (AutoCloseable made = make.make()) {
            assertThat(made).isInstanceOf(type);
        } catch (BackendException e) {
            assertThat(e.getMessage()).doesNotContain(not);
        }
    }

    @Test
    void decodersNeedTheirWeightsFile() {
        assertThat(new CudaBackendProvider().requiredDecoderFiles()).containsExactly(DecoderSpec.WEIGHTS_FILE);
    }

    @Test
    void withoutADriverCreateDecoderFailsFastNamingWhatIsMissing() throws Exception {
        assumeTrue(!driverPresent(), "a CUDA driver library is present: the no-GPU failure cannot be shown here");
        DecoderSpec spec = DecoderFixtures.spec(DecoderFixtures.small("taesd-small"));
        assertThatThrownBy(() -> new CudaBackendProvider().createDecoder(spec,
                        new BackendOptions(1, Map.of("cuda.lib_path", "/opt/my-cuda/lib"))))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining("the CUDA driver library (libcuda.so.1")
                .hasMessageContaining("/opt/my-cuda/lib (absent)");
    }

    @Test
    void decoderOptionsAndWeightsAreCheckedBeforeTheGpu() throws Exception {
        DecoderSpec vae = DecoderFixtures.spec(DecoderFixtures.small("vae-small"));
        assertThatThrownBy(() -> new CudaBackendProvider().createDecoder(vae,
                        new BackendOptions(1, Map.of("cuda.precision", "fp8"))))
                .isInstanceOf(BackendException.class).hasMessageContaining("[fp8]");
        // taesd-small's config over vae-small's weights
        DecoderSpec tiny = DecoderFixtures.spec(DecoderFixtures.small("taesd-small"));
        DecoderSpec mismatched = new DecoderSpec(vae.directory(), tiny.kind(), tiny.latentChannels(),
                tiny.outChannels(), tiny.blockOutChannels(), tiny.layersPerBlock(), tiny.numBlocks(),
                tiny.normGroups(), tiny.scalingFactor(), tiny.shiftFactor(), tiny.postQuantConv(),
                tiny.midBlockAttention(), tiny.upsampling(), tiny.latentMagnitude());
        assertThatThrownBy(() -> new CudaBackendProvider().createDecoder(mismatched, BackendOptions.ofThreads(1)))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining(DecoderSpec.WEIGHTS_FILE)
                .hasMessageContaining("decoder.layers.0.weight");
        DecoderSpec missing = new DecoderSpec(vae.directory().resolve("nowhere"), vae.kind(), vae.latentChannels(),
                vae.outChannels(), vae.blockOutChannels(), vae.layersPerBlock(), vae.numBlocks(), vae.normGroups(),
                vae.scalingFactor(), vae.shiftFactor(), vae.postQuantConv(), vae.midBlockAttention(),
                vae.upsampling(), vae.latentMagnitude());
        assertThatThrownBy(() -> new CudaBackendProvider().createDecoder(missing, BackendOptions.ofThreads(1)))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining("nowhere");
    }
}
