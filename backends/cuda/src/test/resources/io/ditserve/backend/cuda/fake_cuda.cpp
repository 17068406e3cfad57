// A CPU stand-in for libcuda.so.1, libcublas.so.13 and libnvrtc.so.13, for FakeCudaTest: the cuda backend runs
// end to end through its real java.lang.foreign bindings, and the real dit_kernels.cu runs on the CPU.
//
//  - The driver functions are defined against the real cuda.h, so the compiler rejects a prototype that differs
//    from CUDA's (and cuda.h's macros give them their exported _v2 names, as in the real library).
//  - Device memory is host memory with guard zones; every cuStreamSynchronize and cuMemFree checks the guards, so a
//    kernel or GEMM writing out of bounds fails the pass (CUDA_ERROR_ILLEGAL_ADDRESS) as on a GPU.
//  - Kernels: dit_kernels.cu compiled as C++ with the shims below. Each kernel argument is read from the
//    kernelParams array with the kernel's own C++ parameter type, so a wrongly encoded argument gives wrong results.
//    Kernels that synchronise (the row kernels: ln_modulate, softmax_rows, group_norm, layer_norm, ...) run each
//    block's threads as fibers that meet at every __syncthreads and warp shuffle (x86-64 only); the others run their
//    threads one after the other.
//  - cuBLAS: plain column-major SGEMM on host pointers, with cuBLAS's argument checks and pointer-range checks.
//  - NVRTC: checks the options and that the source defines every kernel; returns a fake ELF "cubin".
//  - A CUDA context must be current on the calling thread for memory, module, stream and cuBLAS calls.
//
// Build: g++ -std=c++20 -O2 -shared -fPIC -I$CUDA_INCLUDE -I$DIR fake_cuda.cpp -o libfakecuda.so -lpthread
// (with dit_kernels.cu copied to $DIR). fake_cuda_stat(name) reports counters to the test.

#include <cuda.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

// ---- fibers: a CUDA block's threads as coroutines on one OS thread --------------------------------------------
// A kernel that synchronises runs each thread of a block as a fiber; __syncthreads and each half of a warp shuffle
// yield to the scheduler, which resumes every fiber in turn, so all of them reach a sync point before any goes on
// (our kernels have no divergent sync points: the scheduler fails the launch if fibers disagree). The switch saves
// the System V x86-64 callee-saved registers and swaps stacks.
extern "C" void fake_fiber_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl fake_fiber_switch
.hidden fake_fiber_switch
.type fake_fiber_switch,@function
fake_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size fake_fiber_switch, .-fake_fiber_switch
)");

// ---- shims that let dit_kernels.cu compile as host C++ ------------------------------------------------------
struct FakeDim3 {
    unsigned x = 0, y = 0, z = 0;
};
static FakeDim3 threadIdx, blockIdx, blockDim, gridDim;  // set by the launcher before it runs each thread

enum SyncPoint { NONE, SYNCTHREADS, SHUFFLE_WRITE, SHUFFLE_READ };
static void fiber_yield(SyncPoint at);
static float g_shfl[32][32];

#define __global__
#define __device__
#define __shared__ static

static void __syncthreads() {
    fiber_yield(SYNCTHREADS);
}

static float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    const unsigned warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    g_shfl[warp][lane] = v;
    fiber_yield(SHUFFLE_WRITE);
    const float r = g_shfl[warp][lane ^ lane_mask];
    fiber_yield(SHUFFLE_READ);
    return r;
}

static float __int_as_float(unsigned bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

static float __fmul_rn(float a, float b) {
    return a * b;
}

#include "dit_kernels.cu"

// ---- state ----------------------------------------------------------------------------------------------------
namespace {
constexpr size_t GUARD = 4096;
constexpr unsigned char GUARD_BYTE = 0xA5;

struct Allocation {
    unsigned char* base;  // GUARD bytes, the allocation, GUARD bytes
    size_t size;
};

std::mutex g_mutex;
std::map<uintptr_t, Allocation> g_allocations;  // by device address
int g_context_refs = 0;
int g_streams = 0;
int g_modules = 0;
int g_handles = 0;
int g_programs = 0;
long long g_alloc_calls = 0;  // successful cuMemAlloc calls
long long g_free_calls = 0;   // successful cuMemFree calls
long long g_bad_frees = 0;    // cuMemFree of an address that is not a live allocation (a double free)
long long g_launches = 0;
long long g_gemms = 0;
int g_math_mode = -1;
size_t g_fail_alloc_over = SIZE_MAX;
thread_local void* t_current_context = nullptr;

bool guards_intact(const Allocation& a) {
    for (size_t i = 0; i < GUARD; i++) {
        if (a.base[i] != GUARD_BYTE || a.base[GUARD + a.size + i] != GUARD_BYTE) return false;
    }
    return true;
}

bool all_guards_intact() {
    for (auto& [addr, a] : g_allocations) {
        if (!guards_intact(a)) return false;
    }
    return true;
}

// true when [p, p + bytes) lies inside one live allocation
bool in_allocation(const void* p, size_t bytes) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = g_allocations.upper_bound(a);
    if (it == g_allocations.begin()) return false;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second.size;
}

bool has_context() {
    return t_current_context != nullptr;
}

// ---- kernels by name ------------------------------------------------------------------------------------------
using Invoker = void (*)(void* fn, void** params);

template <typename... A, size_t... I>
void call_with(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<std::remove_reference_t<A>*>(p[I])...);
}

template <typename... A>
Invoker invoker(void (*)(A...)) {
    return [](void* fn, void** params) {
        call_with(reinterpret_cast<void (*)(A...)>(fn), params, std::index_sequence_for<A...>{});
    };
}

struct FakeFunction {
    const char* name;
    void* fn;
    Invoker invoke;
    bool synchronises;  // uses __syncthreads / shuffles: needs its block's threads at once
};

#define KERNEL(name, sync) FakeFunction{#name, reinterpret_cast<void*>(&name), invoker(&name), sync}
FakeFunction g_functions[] = {
    KERNEL(patchify, false),       KERNEL(add_bias_pos, false), KERNEL(timestep_embedding, false),
    KERNEL(bias_silu, false),      KERNEL(bias_gelu, false),    KERNEL(add_bias, false),
    KERNEL(condition, false),      KERNEL(ln_modulate, true),   KERNEL(qkv_split, false),
    KERNEL(softmax_rows, true),    KERNEL(head_merge, false),   KERNEL(gated_residual, false),
    KERNEL(unpatchify, false),     KERNEL(copy_values, false),  KERNEL(span_residual, false),
    KERNEL(head_norm, true),
    // the decoders'
    KERNEL(latent_scale, false),   KERNEL(tanh_clamp, false),   KERNEL(scale_shift, false),
    KERNEL(channel_bias, false),   KERNEL(channel_bias_residual, false),
    KERNEL(group_norm, true),      KERNEL(im2col_3x3, false),
    // the MMDiT's and the text encoders'
    KERNEL(temb_silu, false),      KERNEL(qkv_split_seq, false), KERNEL(head_rms_norm, true),
    KERNEL(head_merge_seq, false), KERNEL(embed_tokens, false),  KERNEL(layer_norm, true),
    KERNEL(rms_norm, true),        KERNEL(bias_quick_gelu, false), KERNEL(bias_gelu_erf, false),
    KERNEL(softmax_causal, true),  KERNEL(softmax_bias, true),   KERNEL(add_residual, false),
    KERNEL(gated_gelu, false),     KERNEL(gather_rows, false),
};

// ---- the fiber scheduler ------------------------------------------------------------------------------------------
constexpr size_t FIBER_STACK = 64 * 1024;

struct Fiber {
    std::unique_ptr<char[]> stack{new char[FIBER_STACK]};
    void* sp = nullptr;
    bool done = false;
    SyncPoint at = NONE;
};

std::vector<Fiber> g_fibers;
void* g_scheduler_sp = nullptr;
unsigned g_current = 0;
FakeFunction* g_kernel = nullptr;
void** g_params = nullptr;

[[noreturn]] void fiber_main() {
    g_kernel->invoke(g_kernel->fn, g_params);
    g_fibers[g_current].done = true;
    fake_fiber_switch(&g_fibers[g_current].sp, g_scheduler_sp);
    __builtin_unreachable();
}

// a fresh stack whose first switch "returns" into fiber_main, entered with the ABI's stack alignment
void* fiber_stack(Fiber& f) {
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack.get()) + FIBER_STACK) & ~uintptr_t(15);
    auto* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;                                           // fiber_main's return address: never used
    *--sp = reinterpret_cast<uint64_t>(&fiber_main);     // where the switch's ret goes
    for (int i = 0; i < 6; i++) *--sp = 0;              // rbp rbx r12 r13 r14 r15
    return sp;
}

// runs block b of a kernel that synchronises; false if its threads reached different sync points
bool run_block_as_fibers(FakeFunction* fn, void** params, unsigned b, unsigned threads) {
    if (g_fibers.size() < threads) g_fibers.resize(threads);
    g_kernel = fn;
    g_params = params;
    blockIdx = FakeDim3{b, 0, 0};
    for (unsigned t = 0; t < threads; t++) {
        g_fibers[t].sp = fiber_stack(g_fibers[t]);
        g_fibers[t].done = false;
    }
    for (unsigned running = threads; running > 0;) {
        SyncPoint round = NONE;
        unsigned finished = 0;
        for (unsigned t = 0; t < threads; t++) {
            if (g_fibers[t].done) continue;
            g_current = t;
            threadIdx = FakeDim3{t, 0, 0};
            fake_fiber_switch(&g_scheduler_sp, g_fibers[t].sp);
            if (g_fibers[t].done) {
                finished++;
            } else if (round == NONE) {
                round = g_fibers[t].at;
            } else if (g_fibers[t].at != round) {
                return false;
            }
        }
        if (finished > 0 && round != NONE) return false;  // some threads wait at a barrier others never reach
        running -= finished;
    }
    return true;
}
}  // namespace

static void fiber_yield(SyncPoint at) {
    g_fibers[g_current].at = at;
    fake_fiber_switch(&g_fibers[g_current].sp, g_scheduler_sp);
}

struct CUctx_st {
    int token;
};
struct CUstream_st {
    int id;
};
struct CUmod_st {
    int id;
};

static CUctx_st g_context{0};
static CUmod_st g_module{1};

// ---- driver API -------------------------------------------------------------------------------------------------
extern "C" {

CUresult cuGetErrorName(CUresult error, const char** pStr) {
    switch (error) {
        case CUDA_SUCCESS: *pStr = "CUDA_SUCCESS"; return CUDA_SUCCESS;
        case CUDA_ERROR_INVALID_VALUE: *pStr = "CUDA_ERROR_INVALID_VALUE"; return CUDA_SUCCESS;
        case CUDA_ERROR_OUT_OF_MEMORY: *pStr = "CUDA_ERROR_OUT_OF_MEMORY"; return CUDA_SUCCESS;
        case CUDA_ERROR_INVALID_CONTEXT: *pStr = "CUDA_ERROR_INVALID_CONTEXT"; return CUDA_SUCCESS;
        case CUDA_ERROR_INVALID_IMAGE: *pStr = "CUDA_ERROR_INVALID_IMAGE"; return CUDA_SUCCESS;
        case CUDA_ERROR_NOT_FOUND: *pStr = "CUDA_ERROR_NOT_FOUND"; return CUDA_SUCCESS;
        case CUDA_ERROR_ILLEGAL_ADDRESS: *pStr = "CUDA_ERROR_ILLEGAL_ADDRESS"; return CUDA_SUCCESS;
        default: return CUDA_ERROR_INVALID_VALUE;
    }
}

CUresult cuGetErrorString(CUresult error, const char** pStr) {
    switch (error) {
        case CUDA_SUCCESS: *pStr = "no error"; return CUDA_SUCCESS;
        case CUDA_ERROR_OUT_OF_MEMORY: *pStr = "out of memory"; return CUDA_SUCCESS;
        case CUDA_ERROR_ILLEGAL_ADDRESS: *pStr = "an illegal memory access was encountered"; return CUDA_SUCCESS;
        default: return cuGetErrorName(error, pStr);
    }
}

CUresult cuInit(unsigned int) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return CUDA_SUCCESS; }
CUresult cuDeviceGetCount(int* count) { *count = 1; return CUDA_SUCCESS; }

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    std::strncpy(name, "Fake CUDA device (CPU)", len);
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice) {
    switch (attrib) {
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = 9; return CUDA_SUCCESS;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = 0; return CUDA_SUCCESS;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *pi = 2; return CUDA_SUCCESS;
        default: return CUDA_ERROR_INVALID_VALUE;
    }
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice) {
    std::lock_guard<std::mutex> l(g_mutex);
    g_context_refs++;
    *pctx = &g_context;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease(CUdevice) {
    std::lock_guard<std::mutex> l(g_mutex);
    if (g_context_refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
    g_context_refs--;
    return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx) {
    if (ctx != nullptr && ctx != &g_context) return CUDA_ERROR_INVALID_CONTEXT;
    t_current_context = ctx;
    return CUDA_SUCCESS;
}

CUresult cuMemGetInfo(size_t* free, size_t* total) {
    *total = size_t(8) << 30;
    *free = *total / 2;
    return CUDA_SUCCESS;
}

CUresult cuMemAlloc(CUdeviceptr* dptr, size_t bytesize) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> l(g_mutex);
    if (bytesize > g_fail_alloc_over) return CUDA_ERROR_OUT_OF_MEMORY;
    auto* base = static_cast<unsigned char*>(std::aligned_alloc(256, (2 * GUARD + bytesize + 255) / 256 * 256));
    std::memset(base, GUARD_BYTE, GUARD);
    std::memset(base + GUARD, 0x7F, bytesize);  // not zeros: reading memory nobody wrote shows
    std::memset(base + GUARD + bytesize, GUARD_BYTE, GUARD);
    uintptr_t addr = reinterpret_cast<uintptr_t>(base + GUARD);
    g_allocations[addr] = Allocation{base, bytesize};
    g_alloc_calls++;
    *dptr = addr;
    return CUDA_SUCCESS;
}

CUresult cuMemFree(CUdeviceptr dptr) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    std::lock_guard<std::mutex> l(g_mutex);
    auto it = g_allocations.find(dptr);
    if (it == g_allocations.end()) {
        g_bad_frees++;
        return CUDA_ERROR_INVALID_VALUE;
    }
    g_free_calls++;
    bool intact = guards_intact(it->second);
    std::free(it->second.base);
    g_allocations.erase(it);
    return intact ? CUDA_SUCCESS : CUDA_ERROR_ILLEGAL_ADDRESS;
}

static CUresult copy_in(CUdeviceptr dst, const void* src, size_t n) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    std::lock_guard<std::mutex> l(g_mutex);
    if (!in_allocation(reinterpret_cast<void*>(dst), n) || src == nullptr) return CUDA_ERROR_INVALID_VALUE;
    std::memcpy(reinterpret_cast<void*>(dst), src, n);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t n) { return copy_in(dst, src, n); }
CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t n, CUstream) { return copy_in(dst, src, n); }

CUresult cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t n, CUstream) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    std::lock_guard<std::mutex> l(g_mutex);
    if (!in_allocation(reinterpret_cast<void*>(src), n) || dst == nullptr) return CUDA_ERROR_INVALID_VALUE;
    std::memcpy(dst, reinterpret_cast<void*>(src), n);
    return CUDA_SUCCESS;
}

CUresult cuStreamCreate(CUstream* s, unsigned int flags) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> l(g_mutex);
    *s = new CUstream_st{++g_streams};
    return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    std::lock_guard<std::mutex> l(g_mutex);
    return all_guards_intact() ? CUDA_SUCCESS : CUDA_ERROR_ILLEGAL_ADDRESS;
}

CUresult cuStreamDestroy(CUstream s) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    std::lock_guard<std::mutex> l(g_mutex);
    delete s;
    g_streams--;
    return CUDA_SUCCESS;
}

CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (std::memcmp(image, "\x7f" "ELF", 4) != 0) return CUDA_ERROR_INVALID_IMAGE;
    std::lock_guard<std::mutex> l(g_mutex);
    g_modules++;
    *module = &g_module;
    return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* hfunc, CUmodule module, const char* name) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (module != &g_module) return CUDA_ERROR_INVALID_HANDLE;
    for (auto& f : g_functions) {
        if (std::strcmp(f.name, name) == 0) {
            *hfunc = reinterpret_cast<CUfunction>(&f);
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_NOT_FOUND;
}

CUresult cuModuleUnload(CUmodule module) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (module != &g_module) return CUDA_ERROR_INVALID_HANDLE;
    std::lock_guard<std::mutex> l(g_mutex);
    g_modules--;
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int shared, CUstream, void** params,
                        void** extra) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (gx == 0 || gy != 1 || gz != 1 || bx == 0 || bx > 1024 || by != 1 || bz != 1 || shared != 0 ||
        params == nullptr || extra != nullptr) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    auto* fn = reinterpret_cast<FakeFunction*>(f);
    std::lock_guard<std::mutex> l(g_mutex);
    g_launches++;
    gridDim = FakeDim3{gx, 1, 1};
    blockDim = FakeDim3{bx, 1, 1};
    if (!fn->synchronises) {
        for (unsigned b = 0; b < gx; b++) {
            for (unsigned t = 0; t < bx; t++) {
                blockIdx = FakeDim3{b, 0, 0};
                threadIdx = FakeDim3{t, 0, 0};
                fn->invoke(fn->fn, params);
            }
        }
        return CUDA_SUCCESS;
    }
    if (bx % 32 != 0) return CUDA_ERROR_INVALID_VALUE;  // the reductions need whole warps
    for (unsigned b = 0; b < gx; b++) {
        if (!run_block_as_fibers(fn, params, b, bx)) return CUDA_ERROR_LAUNCH_FAILED;
    }
    return CUDA_SUCCESS;
}

// ---- cuBLAS ---------------------------------------------------------------------------------------------------
struct FakeBlas {
    CUstream stream;
    int math_mode;
};
typedef FakeBlas* cublasHandle_t;

int cublasCreate_v2(cublasHandle_t* h) {
    if (!has_context()) return 1;  // CUBLAS_STATUS_NOT_INITIALIZED
    std::lock_guard<std::mutex> l(g_mutex);
    g_handles++;
    *h = new FakeBlas{nullptr, 0};
    return 0;
}

int cublasDestroy_v2(cublasHandle_t h) {
    std::lock_guard<std::mutex> l(g_mutex);
    delete h;
    g_handles--;
    return 0;
}

int cublasSetStream_v2(cublasHandle_t h, CUstream s) {
    h->stream = s;
    return 0;
}

int cublasSetMathMode(cublasHandle_t h, int mode) {
    if (mode != 0 && mode != 3) return 7;
    h->math_mode = mode;
    g_math_mode = mode;
    return 0;
}

int cublasGetVersion_v2(cublasHandle_t, int* v) {
    *v = 130000;
    return 0;
}

static int gemm(int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda, long long sa,
                const float* B, int ldb, long long sb, const float* beta, float* C, int ldc, long long sc,
                int batch) {
    if (!has_context()) return 1;
    if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1) || m < 0 || n < 0 || k < 0 || batch < 0 ||
        lda < (ta ? k : m) || lda < 1 || ldb < (tb ? n : k) || ldb < 1 || ldc < m || ldc < 1) {
        return 7;  // CUBLAS_STATUS_INVALID_VALUE
    }
    std::lock_guard<std::mutex> l(g_mutex);
    g_gemms++;
    const float al = *alpha, be = *beta;
    const long long a_ext = (long long)((ta ? m : k) - 1) * lda + (ta ? k : m);
    const long long b_ext = (long long)((tb ? k : n) - 1) * ldb + (tb ? n : k);
    const long long c_ext = (long long)(n - 1) * ldc + m;
    for (int z = 0; z < batch; z++) {
        const float* a = A + z * sa;
        const float* b = B + z * sb;
        float* c = C + z * sc;
        if (!in_allocation(a, a_ext * 4) || !in_allocation(b, b_ext * 4) || !in_allocation(c, c_ext * 4)) {
            return 14;  // CUBLAS_STATUS_INTERNAL_ERROR: the real library would fault
        }
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                float s = 0;
                for (int l = 0; l < k; l++) {
                    s += (ta ? a[l + (long long)i * lda] : a[i + (long long)l * lda]) *
                         (tb ? b[j + (long long)l * ldb] : b[l + (long long)j * ldb]);
                }
                float* out = &c[i + (long long)j * ldc];
                *out = al * s + (be == 0.0f ? 0.0f : be * *out);
            }
        }
    }
    return 0;
}

int cublasSgemm_v2(cublasHandle_t, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc) {
    return gemm(ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

int cublasSgemmStridedBatched(cublasHandle_t, int ta, int tb, int m, int n, int k, const float* alpha,
                              const float* A, int lda, long long sa, const float* B, int ldb, long long sb,
                              const float* beta, float* C, int ldc, long long sc, int batch) {
    return gemm(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

// cublasGemmEx with float32 matrices: the fake checks the enum values the backend passes (CUDA_R_32F = 0,
// CUBLAS_COMPUTE_32F_FAST_16BF = 75, CUBLAS_GEMM_DEFAULT = -1) and computes in float32.
static int gemm_ex_types(int at, int bt, int ct, int compute, int algo) {
    return (at == 0 && bt == 0 && ct == 0 && compute == 75 && algo == -1) ? 0 : 7;  // else INVALID_VALUE
}

int cublasGemmEx(cublasHandle_t, int ta, int tb, int m, int n, int k, const void* alpha, const void* A, int at,
                 int lda, const void* B, int bt, int ldb, const void* beta, void* C, int ct, int ldc, int compute,
                 int algo) {
    int bad = gemm_ex_types(at, bt, ct, compute, algo);
    if (bad) return bad;
    return gemm(ta, tb, m, n, k, (const float*)alpha, (const float*)A, lda, 0, (const float*)B, ldb, 0,
                (const float*)beta, (float*)C, ldc, 0, 1);
}

int cublasGemmStridedBatchedEx(cublasHandle_t, int ta, int tb, int m, int n, int k, const void* alpha,
                               const void* A, int at, int lda, long long sa, const void* B, int bt, int ldb,
                               long long sb, const void* beta, void* C, int ct, int ldc, long long sc, int batch,
                               int compute, int algo) {
    int bad = gemm_ex_types(at, bt, ct, compute, algo);
    if (bad) return bad;
    return gemm(ta, tb, m, n, k, (const float*)alpha, (const float*)A, lda, sa, (const float*)B, ldb, sb,
                (const float*)beta, (float*)C, ldc, sc, batch);
}

// ---- NVRTC ----------------------------------------------------------------------------------------------------
struct FakeProgram {
    std::string source;
    std::string log;
    std::string cubin;
};
typedef FakeProgram* nvrtcProgram;

int nvrtcVersion(int* major, int* minor) {
    *major = 13;
    *minor = 0;
    return 0;
}

const char* nvrtcGetErrorString(int r) {
    return r == 0 ? "NVRTC_SUCCESS" : r == 5 ? "NVRTC_ERROR_INVALID_OPTION" : "NVRTC_ERROR_COMPILATION";
}

int nvrtcCreateProgram(nvrtcProgram* p, const char* src, const char* name, int numHeaders, const char* const*,
                       const char* const*) {
    if (src == nullptr || name == nullptr || numHeaders != 0) return 3;
    std::lock_guard<std::mutex> l(g_mutex);
    g_programs++;
    *p = new FakeProgram{src, "", ""};
    return 0;
}

int nvrtcCompileProgram(nvrtcProgram p, int n, const char* const* options) {
    bool arch = false;
    for (int i = 0; i < n; i++) {
        std::string o = options[i];
        if (o == "--gpu-architecture=sm_90") arch = true;
        if (o.find("fast_math") != std::string::npos) {
            p->log = "fake NVRTC: --use_fast_math would break parity";
            return 5;
        }
    }
    if (!arch) {
        p->log = "fake NVRTC: expected --gpu-architecture=sm_90 for the fake device's compute capability 9.0";
        return 5;
    }
    for (auto& f : g_functions) {
        if (p->source.find(std::string("void ") + f.name + "(") == std::string::npos) {
            p->log = std::string("fake NVRTC: the source lacks kernel ") + f.name;
            return 6;
        }
    }
    p->cubin = std::string("\x7f" "ELF fake cubin");
    return 0;
}

int nvrtcGetProgramLogSize(nvrtcProgram p, size_t* size) {
    *size = p->log.size() + 1;
    return 0;
}

int nvrtcGetProgramLog(nvrtcProgram p, char* log) {
    std::memcpy(log, p->log.c_str(), p->log.size() + 1);
    return 0;
}

int nvrtcGetCUBINSize(nvrtcProgram p, size_t* size) {
    *size = p->cubin.size();
    return 0;
}

int nvrtcGetCUBIN(nvrtcProgram p, char* out) {
    std::memcpy(out, p->cubin.data(), p->cubin.size());
    return 0;
}

int nvrtcDestroyProgram(nvrtcProgram* p) {
    std::lock_guard<std::mutex> l(g_mutex);
    delete *p;
    *p = nullptr;
    g_programs--;
    return 0;
}

// ---- for the test ---------------------------------------------------------------------------------------------
long long fake_cuda_stat(const char* what) {
    std::lock_guard<std::mutex> l(g_mutex);
    std::string w = what;
    if (w == "allocations") return (long long)g_allocations.size();
    if (w == "contexts") return g_context_refs;
    if (w == "streams") return g_streams;
    if (w == "modules") return g_modules;
    if (w == "handles") return g_handles;
    if (w == "programs") return g_programs;
    if (w == "launches") return g_launches;
    if (w == "alloc_calls") return g_alloc_calls;
    if (w == "free_calls") return g_free_calls;
    if (w == "bad_frees") return g_bad_frees;
    if (w == "gemms") return g_gemms;
    if (w == "math_mode") return g_math_mode;
    return -1;
}

void fake_cuda_fail_alloc_over(long long bytes) {
    std::lock_guard<std::mutex> l(g_mutex);
    g_fail_alloc_over = bytes < 0 ? SIZE_MAX : (size_t)bytes;
}

}  // extern "C"
