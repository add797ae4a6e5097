// Input validation and tensors of the fused L1 + D-SSIM loss (the kernel is torch-free: ssim.cpp).
#include "ssim_binding.h"

#include "ssim.h"

#include <algorithm>

namespace cpu_rasterizer {
namespace {

// A CPU tensor of pred's dtype and the given shape, contiguous.
void check_like_pred(const torch::Tensor& t, const char* name, torch::ScalarType dtype, torch::IntArrayRef shape) {
    TORCH_CHECK(t.device().is_cpu(), "l1_dssim: ", name, " must be a CPU tensor (got ", t.device(), ")");
    TORCH_CHECK(t.scalar_type() == dtype, "l1_dssim: ", name, " must be ", dtype, " like pred (got ",
                t.scalar_type(), ")");
    TORCH_CHECK(t.sizes() == shape, "l1_dssim: ", name, " must have shape ", shape, " (got ", t.sizes(), ")");
    TORCH_CHECK(t.is_contiguous(), "l1_dssim: ", name, " must be contiguous");
}

}  // namespace

std::vector<torch::Tensor> py_l1_dssim(const torch::Tensor& pred, const torch::Tensor& gt,
                                       const std::optional<torch::Tensor>& mask, double lambda,
                                       const std::vector<double>& taps, double c1, double c2, bool need_grad,
                                       int64_t num_threads, int64_t isa) {
    const auto dtype = pred.scalar_type();
    TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kFloat64,
                "l1_dssim: pred must be float32 or float64 (got ", dtype, ")");
    TORCH_CHECK(pred.dim() == 3 && pred.numel() > 0, "l1_dssim: pred must be a non-empty [C, H, W] image (got ",
                pred.sizes(), ")");
    const int64_t C = pred.size(0), H = pred.size(1), W = pred.size(2);
    check_like_pred(pred, "pred", dtype, {C, H, W});
    check_like_pred(gt, "gt", dtype, {C, H, W});
    if (mask) check_like_pred(*mask, "mask", dtype, {1, H, W});
    TORCH_CHECK(lambda >= 0.0 && lambda <= 1.0, "l1_dssim: lambda must be in [0, 1] (got ", lambda, ")");
    TORCH_CHECK(taps.size() % 2 == 1, "l1_dssim: the window needs an odd number of taps (got ", taps.size(), ")");
    TORCH_CHECK(std::equal(taps.begin(), taps.end(), taps.rbegin()), "l1_dssim: the window must be symmetric");
    TORCH_CHECK(num_threads > 0, "l1_dssim: num_threads must be positive");
    TORCH_CHECK(isa >= 0 && isa <= 2, "l1_dssim: isa must be 0 (auto), 1 (generic) or 2 (avx2), got ", isa);
    TORCH_CHECK(isa != 2 || avx2_supported(), "l1_dssim: isa=2 (avx2) requested but this CPU has no AVX2");
    const DssimSettings st{lambda, c1, c2, taps.data(), static_cast<int64_t>(taps.size() / 2)};
    torch::Tensor grad = torch::empty({need_grad ? C : 0, H, W}, pred.options());  // every entry is written
    double loss = 0.0;
    AT_DISPATCH_FLOATING_TYPES(dtype, "cpu_rasterizer_l1_dssim", [&] {
        const DssimImages<scalar_t> in{pred.data_ptr<scalar_t>(), gt.data_ptr<scalar_t>(),
                                       mask ? mask->data_ptr<scalar_t>() : nullptr, C, H, W};
        loss = l1_dssim<scalar_t>(in, st, need_grad ? grad.data_ptr<scalar_t>() : nullptr, static_cast<Isa>(isa),
                                  static_cast<int>(num_threads));
    });
    return {torch::scalar_tensor(loss, pred.options()), grad};
}

}  // namespace cpu_rasterizer
