// Input validation and tensors of the fused L1 + D-SSIM loss (the kernel is torch-free: ssim.cpp).
#include "ssim_binding.h"

#include <algorithm>

#include "binding_checks.h"
#include "ssim.h"

namespace cpu_rasterizer {

std::vector<torch::Tensor> py_l1_dssim(const torch::Tensor& pred, const torch::Tensor& gt,
                                       const std::optional<torch::Tensor>& mask, double lambda,
                                       const std::vector<double>& taps, double c1, double c2, bool need_grad,
                                       int64_t num_threads, int64_t isa) {
    check_floating(pred, "pred");
    const auto dtype = pred.scalar_type();
    TORCH_CHECK(pred.dim() == 3 && pred.numel() > 0, "l1_dssim: pred must be a non-empty [C, H, W] image (got ",
                pred.sizes(), ")");
    const int64_t C = pred.size(0), H = pred.size(1), W = pred.size(2);
    check_float(gt, "gt", dtype);
    check_shape(gt, "gt", {C, H, W});
    if (mask) {
        check_float(*mask, "mask", dtype);
        check_shape(*mask, "mask", {1, H, W});
    }
    TORCH_CHECK(lambda >= 0.0 && lambda <= 1.0, "l1_dssim: lambda must be in [0, 1] (got ", lambda, ")");
    TORCH_CHECK(taps.size() % 2 == 1, "l1_dssim: the window needs an odd number of taps (got ", taps.size(), ")");
    TORCH_CHECK(std::equal(taps.begin(), taps.end(), taps.rbegin()), "l1_dssim: the window must be symmetric");
    TORCH_CHECK(num_threads > 0, "l1_dssim: num_threads must be positive");
    const Isa kernel_isa = checked_isa(isa);
    const DssimSettings st{lambda, c1, c2, taps.data(), static_cast<int64_t>(taps.size() / 2)};
    torch::Tensor grad = torch::empty({need_grad ? C : 0, H, W}, pred.options());  // every entry is written
    double loss = 0.0;
    AT_DISPATCH_FLOATING_TYPES(dtype, "cpu_rasterizer_l1_dssim", [&] {
        const DssimImages<scalar_t> in{pred.data_ptr<scalar_t>(), gt.data_ptr<scalar_t>(),
                                       mask ? mask->data_ptr<scalar_t>() : nullptr, C, H, W};
        loss = l1_dssim<scalar_t>(in, st, need_grad ? grad.data_ptr<scalar_t>() : nullptr, kernel_isa,
                                  static_cast<int>(num_threads));
    });
    return {torch::scalar_tensor(loss, pred.options()), grad};
}

}  // namespace cpu_rasterizer
