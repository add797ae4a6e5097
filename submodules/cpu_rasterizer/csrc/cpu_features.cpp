// Run-time CPU feature detection for the kernel dispatch.
#include "rasterizer.h"

namespace cpu_rasterizer {

bool avx2_supported() {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

}  // namespace cpu_rasterizer
