package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import io.ditserve.backend.BackendException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.util.Optional;

/**
 * A shared library opened with the C library's {@code dlopen}, called through {@code java.lang.foreign}.
 *
 * <p>{@link java.lang.foreign.SymbolLookup#libraryLookup} would do, but it drops the loader's reason on failure;
 * here a library that is found but cannot be loaded reports {@code dlerror()}'s text, e.g. "libcublasLt.so.13:
 * cannot open shared object file", which is what a person needs to fix it.
 *
 * <p>Libraries are never closed: the CUDA driver does not support being unloaded from a process that used it, and
 * opening an already loaded library again only increments its reference count.
 *
 * <p>Binding native functions and reading native strings are "restricted" FFM operations: this class is where the
 * backend does them on purpose (the JVM needs {@code --enable-native-access=ALL-UNNAMED}).
 */
@SuppressWarnings("restricted")
final class NativeLibrary {
    private static final int RTLD_NOW = 2;

    /** The C library's dynamic-loading functions. */
    static final class Loader {
        private final MethodHandle dlopen;
        private final MethodHandle dlsym;
        private final MethodHandle dlerror;

        Loader() {
            Linker linker = Linker.nativeLinker();
            var libc = linker.defaultLookup();
            dlopen = linker.downcallHandle(libc.find("dlopen").orElseThrow(),
                    FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_INT));
            dlsym = linker.downcallHandle(libc.find("dlsym").orElseThrow(),
                    FunctionDescriptor.of(ADDRESS, ADDRESS, ADDRESS));
            dlerror = linker.downcallHandle(libc.find("dlerror").orElseThrow(), FunctionDescriptor.of(ADDRESS));
        }

        /**
         * Opens a library by path, or by bare name through the system's search (LD_LIBRARY_PATH, the ld.so cache).
         *
         * @throws LoadFailure with dlerror's text
         */
        NativeLibrary open(String pathOrName) throws LoadFailure {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment name = a.allocateFrom(pathOrName);
                MemorySegment handle = NativeCalls.invoke("dlopen(" + pathOrName + ")",
                        () -> (MemorySegment) dlopen.invokeExact(name, RTLD_NOW));
                if (handle.equals(MemorySegment.NULL)) {
                    MemorySegment err = NativeCalls.invoke("dlerror", () -> (MemorySegment) dlerror.invokeExact());
                    throw new LoadFailure(err.equals(MemorySegment.NULL) ? "dlopen failed" : cString(err));
                }
                return new NativeLibrary(this, pathOrName, handle);
            }
        }

        private Optional<MemorySegment> symbol(MemorySegment handle, String name) {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment symbol = a.allocateFrom(name);
                MemorySegment s = NativeCalls.invoke("dlsym(" + name + ")",
                        () -> (MemorySegment) dlsym.invokeExact(handle, symbol));
                return s.equals(MemorySegment.NULL) ? Optional.empty() : Optional.of(s);
            }
        }
    }

    /** A library that was found but could not be loaded; the message is the loader's reason. */
    static final class LoadFailure extends Exception {
        LoadFailure(String reason) {
            super(reason);
        }
    }

    private final Loader loader;
    private final String name;
    private final MemorySegment handle;

    private NativeLibrary(Loader loader, String name, MemorySegment handle) {
        this.loader = loader;
        this.name = name;
        this.handle = handle;
    }

    /** The path or bare name it was opened by. */
    String name() {
        return name;
    }

    Optional<MemorySegment> find(String symbol) {
        return loader.symbol(handle, symbol);
    }

    /**
     * A downcall handle for the first of {@code symbols} that the library exports (newer and older names of one
     * function, e.g. {@code cublasSgemm_v2}, {@code cublasSgemm}).
     */
    MethodHandle function(FunctionDescriptor descriptor, String... symbols) throws BackendException {
        for (String s : symbols) {
            Optional<MemorySegment> address = find(s);
            if (address.isPresent()) {
                return Linker.nativeLinker().downcallHandle(address.get(), descriptor);
            }
        }
        throw new BackendException(name + " has no function " + String.join(" or ", symbols)
                + " (a library version this backend does not support?)");
    }

    /** The NUL-terminated string at a native address. */
    static String cString(MemorySegment address) {
        return address.reinterpret(Long.MAX_VALUE).getString(0);
    }
}
