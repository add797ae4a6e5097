// Run-time CPU feature detection for the kernel dispatch.
#include "rasterizer.h"
#include "simd.h"

namespace cpu_rasterizer {

bool avx2_supported() {
#if CPU_RASTERIZER_X86
    return __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

}  // namespace cpu_rasterizer
