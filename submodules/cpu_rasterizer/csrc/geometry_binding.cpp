// Input validation and tensors of the geometry kernels (the kernels are torch-free: geometry.cpp).
#include "geometry_binding.h"

#include "binding_checks.h"
#include "geometry.h"

namespace cpu_rasterizer {
namespace {

// Checks log_scales [N, 3], quats [N, 4] and, when given, weights [N, B, 10] with phi [B], all of one
// floating dtype; returns B (0 without weights).
int64_t check_geometry(const torch::Tensor& log_scales, const torch::Tensor& quats,
                       const std::optional<torch::Tensor>& weights, const std::optional<torch::Tensor>& phi,
                       double norm_eps, int64_t num_threads) {
    check_floating(log_scales, "log_scales");
    const auto dtype = log_scales.scalar_type();
    const int64_t n = log_scales.size(0);
    check_shape(log_scales, "log_scales", {n, 3});
    check_float(quats, "quats", dtype);
    check_shape(quats, "quats", {n, 4});
    TORCH_CHECK(weights.has_value() == phi.has_value(), "geometry: weights and phi come together");
    TORCH_CHECK(norm_eps > 0.0, "geometry: norm_eps must be positive (got ", norm_eps, ")");
    TORCH_CHECK(num_threads > 0, "geometry: num_threads must be positive");
    if (!weights) return 0;
    check_float(*weights, "weights", dtype);
    TORCH_CHECK(weights->dim() == 3 && weights->size(0) == n && weights->size(2) == kDeformChannels,
                "weights must be [N, B, ", kDeformChannels, "] with N = ", n, " (got ", weights->sizes(), ")");
    const int64_t bumps = weights->size(1);
    check_float(*phi, "phi", dtype);
    check_shape(*phi, "phi", {bumps});
    return bumps;
}

template <typename scalar_t>
RawGeometry<scalar_t> raw_geometry(const scalar_t* xyz, const torch::Tensor& log_scales, const torch::Tensor& quats,
                                   const std::optional<torch::Tensor>& weights,
                                   const std::optional<torch::Tensor>& phi, int64_t bumps) {
    return {xyz,
            log_scales.data_ptr<scalar_t>(),
            quats.data_ptr<scalar_t>(),
            weights ? weights->data_ptr<scalar_t>() : nullptr,
            phi ? phi->data_ptr<scalar_t>() : nullptr,
            log_scales.size(0),
            bumps};
}

}  // namespace

std::vector<torch::Tensor> py_geometry_forward(const torch::Tensor& xyz, const torch::Tensor& log_scales,
                                               const torch::Tensor& quats, const std::optional<torch::Tensor>& weights,
                                               const std::optional<torch::Tensor>& phi, double norm_eps,
                                               int64_t num_threads) {
    const int64_t bumps = check_geometry(log_scales, quats, weights, phi, norm_eps, num_threads);
    check_float(xyz, "xyz", log_scales.scalar_type());
    check_shape(xyz, "xyz", {log_scales.size(0), 3});
    torch::Tensor means = torch::empty_like(xyz), scales = torch::empty_like(xyz), unit = torch::empty_like(quats);
    AT_DISPATCH_FLOATING_TYPES(xyz.scalar_type(), "cpu_rasterizer_geometry_forward", [&] {
        geometry_forward<scalar_t>(raw_geometry<scalar_t>(xyz.data_ptr<scalar_t>(), log_scales, quats, weights, phi, bumps),
                                   norm_eps,
                                   {means.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(), unit.data_ptr<scalar_t>()},
                                   static_cast<int>(num_threads));
    });
    return {means, scales, unit};
}

std::vector<torch::Tensor> py_geometry_backward(const torch::Tensor& log_scales, const torch::Tensor& quats,
                                                const std::optional<torch::Tensor>& weights,
                                                const std::optional<torch::Tensor>& phi, double norm_eps,
                                                const torch::Tensor& grad_means, const torch::Tensor& grad_scales,
                                                const torch::Tensor& grad_quats, int64_t num_threads) {
    const int64_t bumps = check_geometry(log_scales, quats, weights, phi, norm_eps, num_threads);
    const auto dtype = log_scales.scalar_type();
    const int64_t n = log_scales.size(0);
    check_float(grad_means, "grad_means", dtype);
    check_shape(grad_means, "grad_means", {n, 3});
    check_float(grad_scales, "grad_scales", dtype);
    check_shape(grad_scales, "grad_scales", {n, 3});
    check_float(grad_quats, "grad_quats", dtype);
    check_shape(grad_quats, "grad_quats", {n, 4});
    // every entry is written by geometry_backward
    torch::Tensor d_xyz = torch::empty_like(log_scales), d_log_scales = torch::empty_like(log_scales);
    torch::Tensor d_quats = torch::empty_like(quats);
    torch::Tensor d_weights = weights ? torch::empty_like(*weights) : torch::empty({0}, log_scales.options());
    AT_DISPATCH_FLOATING_TYPES(dtype, "cpu_rasterizer_geometry_backward", [&] {
        const RawGeometryGrads<scalar_t> out{d_xyz.data_ptr<scalar_t>(), d_log_scales.data_ptr<scalar_t>(),
                                             d_quats.data_ptr<scalar_t>(),
                                             weights ? d_weights.data_ptr<scalar_t>() : nullptr};
        geometry_backward<scalar_t>(raw_geometry<scalar_t>(nullptr, log_scales, quats, weights, phi, bumps), norm_eps,
                                    {grad_means.data_ptr<scalar_t>(), grad_scales.data_ptr<scalar_t>(),
                                     grad_quats.data_ptr<scalar_t>()},
                                    out, static_cast<int>(num_threads));
    });
    return {d_xyz, d_log_scales, d_quats, d_weights};
}

}  // namespace cpu_rasterizer
