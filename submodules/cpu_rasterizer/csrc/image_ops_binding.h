// Bindings of the per-pixel ops around the compositing (image_ops.h), registered by bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <optional>
#include <vector>

namespace cpu_rasterizer {

// (image [3, H, W], depth [1, H, W]) from out [C, H, W], alpha [1, H, W], bg [3]; see image_ops.h.
std::vector<torch::Tensor> py_finish_forward(const torch::Tensor& out, const torch::Tensor& alpha,
                                             const torch::Tensor& bg, int64_t depth_channel, double alpha_floor,
                                             int64_t num_threads);

// (grad_out [C, H, W] with rows 0-2 and depth_channel written, the others left for the caller,
//  grad_alpha [1, H, W]).
std::vector<torch::Tensor> py_finish_backward(const torch::Tensor& out, const torch::Tensor& alpha,
                                              const torch::Tensor& bg, int64_t depth_channel, double alpha_floor,
                                              const std::optional<torch::Tensor>& grad_image,
                                              const std::optional<torch::Tensor>& grad_depth, int64_t num_threads);

// (loss [], d loss / d pred [1, H, W] or [0] unless need_grad); see image_ops.h.
std::vector<torch::Tensor> py_depth_l1(const torch::Tensor& pred, const torch::Tensor& gt,
                                       const std::optional<torch::Tensor>& mask, double scale_floor, bool need_grad,
                                       int64_t num_threads);

}  // namespace cpu_rasterizer
