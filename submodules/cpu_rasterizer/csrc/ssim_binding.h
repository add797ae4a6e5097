// Binding of the fused L1 + D-SSIM loss (ssim.h), registered by bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <optional>
#include <vector>

namespace cpu_rasterizer {

// (loss [] , d loss / d pred [C, H, W] or [0] unless need_grad); see ssim.h.
std::vector<torch::Tensor> py_l1_dssim(const torch::Tensor& pred, const torch::Tensor& gt,
                                       const std::optional<torch::Tensor>& mask, double lambda,
                                       const std::vector<double>& taps, double c1, double c2, bool need_grad,
                                       int64_t num_threads, int64_t isa);

}  // namespace cpu_rasterizer
