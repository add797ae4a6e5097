// Bindings of the Gaussians' geometry at a time t (geometry.h), registered by bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <optional>
#include <vector>

namespace cpu_rasterizer {

// (means [N, 3], scales [N, 3], unit quats [N, 4]) from xyz, log_scales, quats and, for deformable models, the
// bump weights [N, B, 10] and their activations phi [B].
std::vector<torch::Tensor> py_geometry_forward(const torch::Tensor& xyz, const torch::Tensor& log_scales,
                                               const torch::Tensor& quats, const std::optional<torch::Tensor>& weights,
                                               const std::optional<torch::Tensor>& phi, double norm_eps,
                                               int64_t num_threads);

// (d_xyz, d_log_scales, d_quats, d_weights ([N, B, 10], or [0] without weights)).
std::vector<torch::Tensor> py_geometry_backward(const torch::Tensor& log_scales, const torch::Tensor& quats,
                                                const std::optional<torch::Tensor>& weights,
                                                const std::optional<torch::Tensor>& phi, double norm_eps,
                                                const torch::Tensor& grad_means, const torch::Tensor& grad_scales,
                                                const torch::Tensor& grad_quats, int64_t num_threads);

}  // namespace cpu_rasterizer
