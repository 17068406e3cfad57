package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.testkit.Fixtures;
import java.io.File;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.ArrayList;
import java.util.List;
import java.util.ServiceLoader;
import org.junit.jupiter.api.Test;

/**
 * The provider is found by name, and finding it loads no ONNX Runtime class (BackendProvider's contract: discovery
 * is cheap). The second is checked in a class loader of its own, since other tests load ONNX Runtime in this JVM.
 */
class DiscoveryTest {

    /** Defines the test class path's classes itself, so it can tell which ones were loaded. */
    private static final class IsolatedLoader extends URLClassLoader {
        IsolatedLoader(URL[] urls) {
            super("isolated", urls, ClassLoader.getPlatformClassLoader());
        }

        boolean loaded(String className) {
            return findLoadedClass(className) != null;
        }
    }

    @Test
    void foundByNameThroughServiceLoader() {
        BackendProvider p = Fixtures.provider("onnx");
        assertThat(p).isInstanceOf(OnnxBackendProvider.class);
        assertThat(p.requiredFiles()).containsExactly("model.onnx");
        assertThat(p.description()).contains("onnx.provider=cpu|cuda", "onnx.optimization=all|extended|basic|none");
    }

    @Test
    void discoveryLoadsNoOnnxRuntimeClass() throws Exception {
        try (IsolatedLoader loader = new IsolatedLoader(classPath())) {
            Class<?> spi = loader.loadClass("io.ditserve.backend.BackendProvider");
            List<String> names = new ArrayList<>();
            for (Object provider : ServiceLoader.load(spi, loader)) {
                names.add((String) spi.getMethod("name").invoke(provider));
                spi.getMethod("description").invoke(provider);
                spi.getMethod("requiredFiles").invoke(provider);
            }
            assertThat(names).contains("onnx");
            assertThat(loader.loaded("io.ditserve.backend.onnx.OnnxBackendProvider")).isTrue();
            assertThat(loader.loaded("ai.onnxruntime.OnnxRuntime")).as("the class that loads the native library")
                    .isFalse();
            assertThat(loader.loaded("ai.onnxruntime.OrtEnvironment")).isFalse();
        }
    }

    private static URL[] classPath() throws MalformedURLException {
        String[] entries = System.getProperty("java.class.path").split(File.pathSeparator);
        URL[] urls = new URL[entries.length];
        for (int i = 0; i < entries.length; i++) {
            urls[i] = new File(entries[i]).toURI().toURL();
        }
        return urls;
    }
}
