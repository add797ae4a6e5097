// Argument checks shared by the Python bindings (bindings.cpp, ssim_binding.cpp); each names the
// offending argument in its message.
#pragma once

#include <torch/extension.h>

#include <initializer_list>

#include "rasterizer.h"

namespace cpu_rasterizer {

inline void check_cpu_contiguous(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor (got ", t.device(), ")");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// A contiguous CPU tensor of float32 or float64 (the dtypes the kernels are built for).
inline void check_floating(const torch::Tensor& t, const char* name) {
    check_cpu_contiguous(t, name);
    TORCH_CHECK(t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64, name,
                " must be float32 or float64 (got ", t.scalar_type(), ")");
}

// A contiguous CPU tensor of exactly `dtype` (the dtype of the call's other tensors).
inline void check_float(const torch::Tensor& t, const char* name, torch::ScalarType dtype) {
    check_cpu_contiguous(t, name);
    TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, " (got ", t.scalar_type(), ")");
}

inline void check_shape(const torch::Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
    TORCH_CHECK(t.sizes() == torch::IntArrayRef(shape), name, " must have shape ", torch::IntArrayRef(shape),
                " (got ", t.sizes(), ")");
}

// The kernels' instruction set from Python's KERNEL_ISA (0 auto, 1 portable, 2 AVX2).
inline Isa checked_isa(int64_t isa) {
    TORCH_CHECK(isa >= 0 && isa <= 2, "isa must be 0 (auto), 1 (generic) or 2 (avx2), got ", isa);
    TORCH_CHECK(isa != 2 || avx2_supported(), "isa=2 (avx2) requested but this CPU has no AVX2");
    return static_cast<Isa>(isa);
}

}  // namespace cpu_rasterizer
