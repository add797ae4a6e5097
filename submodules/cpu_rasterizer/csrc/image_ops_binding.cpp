// Input validation and tensors of the per-pixel ops around the compositing (the kernels are
// torch-free: image_ops.cpp).
#include "image_ops_binding.h"

#include "binding_checks.h"
#include "image_ops.h"

namespace cpu_rasterizer {
namespace {

// Checks out [C, H, W] (C > depth_channel >= 3), alpha [1, H, W] and bg [3] of one floating dtype.
void check_finish(const torch::Tensor& out, const torch::Tensor& alpha, const torch::Tensor& bg,
                  int64_t depth_channel, double alpha_floor, int64_t num_threads) {
    check_floating(out, "out");
    TORCH_CHECK(out.dim() == 3, "finish: out must be [C, H, W] (got ", out.sizes(), ")");
    TORCH_CHECK(depth_channel >= kColorChannels && depth_channel < out.size(0),
                "finish: depth_channel must be in [3, C) with C = ", out.size(0), " (got ", depth_channel, ")");
    check_float(alpha, "alpha", out.scalar_type());
    check_shape(alpha, "alpha", {1, out.size(1), out.size(2)});
    check_float(bg, "bg", out.scalar_type());
    check_shape(bg, "bg", {kColorChannels});
    TORCH_CHECK(alpha_floor > 0.0, "finish: alpha_floor must be positive (got ", alpha_floor, ")");
    TORCH_CHECK(num_threads > 0, "finish: num_threads must be positive");
}

template <typename T>
FinishPlanes<T> planes(const torch::Tensor& out, const torch::Tensor& alpha, const torch::Tensor& bg,
                       int64_t depth_channel) {
    return {out.data_ptr<T>(), alpha.data_ptr<T>(), bg.data_ptr<T>(), out.size(0), depth_channel,
            out.size(1) * out.size(2)};
}

}  // namespace

std::vector<torch::Tensor> py_finish_forward(const torch::Tensor& out, const torch::Tensor& alpha,
                                             const torch::Tensor& bg, int64_t depth_channel, double alpha_floor,
                                             int64_t num_threads) {
    check_finish(out, alpha, bg, depth_channel, alpha_floor, num_threads);
    torch::Tensor image = torch::empty({kColorChannels, out.size(1), out.size(2)}, out.options());
    torch::Tensor depth = torch::empty_like(alpha);
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cpu_rasterizer_finish_forward", [&] {
        finish_forward<scalar_t>(planes<scalar_t>(out, alpha, bg, depth_channel), static_cast<scalar_t>(alpha_floor),
                                 image.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), static_cast<int>(num_threads));
    });
    return {image, depth};
}

std::vector<torch::Tensor> py_finish_backward(const torch::Tensor& out, const torch::Tensor& alpha,
                                              const torch::Tensor& bg, int64_t depth_channel, double alpha_floor,
                                              const std::optional<torch::Tensor>& grad_image,
                                              const std::optional<torch::Tensor>& grad_depth, int64_t num_threads) {
    check_finish(out, alpha, bg, depth_channel, alpha_floor, num_threads);
    if (grad_image) {
        check_float(*grad_image, "grad_image", out.scalar_type());
        check_shape(*grad_image, "grad_image", {kColorChannels, out.size(1), out.size(2)});
    }
    if (grad_depth) {
        check_float(*grad_depth, "grad_depth", out.scalar_type());
        check_shape(*grad_depth, "grad_depth", {1, out.size(1), out.size(2)});
    }
    torch::Tensor grad_out = torch::empty_like(out);      // rows 0-2 and d written here, the others by the caller
    torch::Tensor grad_alpha = torch::empty_like(alpha);  // every entry written
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "cpu_rasterizer_finish_backward", [&] {
        finish_backward<scalar_t>(planes<scalar_t>(out, alpha, bg, depth_channel), static_cast<scalar_t>(alpha_floor),
                                  grad_image ? grad_image->data_ptr<scalar_t>() : nullptr,
                                  grad_depth ? grad_depth->data_ptr<scalar_t>() : nullptr,
                                  grad_out.data_ptr<scalar_t>(), grad_alpha.data_ptr<scalar_t>(),
                                  static_cast<int>(num_threads));
    });
    return {grad_out, grad_alpha};
}

std::vector<torch::Tensor> py_depth_l1(const torch::Tensor& pred, const torch::Tensor& gt,
                                       const std::optional<torch::Tensor>& mask, double scale_floor, bool need_grad,
                                       int64_t num_threads) {
    check_floating(pred, "pred");
    TORCH_CHECK(pred.dim() == 3 && pred.size(0) == 1, "depth_l1: pred must be [1, H, W] (got ", pred.sizes(), ")");
    check_float(gt, "gt", pred.scalar_type());
    check_shape(gt, "gt", {1, pred.size(1), pred.size(2)});
    if (mask) {
        check_float(*mask, "mask", pred.scalar_type());
        check_shape(*mask, "mask", {1, pred.size(1), pred.size(2)});
    }
    TORCH_CHECK(scale_floor > 0.0, "depth_l1: scale_floor must be positive (got ", scale_floor, ")");
    TORCH_CHECK(num_threads > 0, "depth_l1: num_threads must be positive");
    torch::Tensor grad = need_grad ? torch::empty_like(pred) : torch::empty({0}, pred.options());
    double loss = 0.0;
    AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "cpu_rasterizer_depth_l1", [&] {
        const DepthL1Maps<scalar_t> in{pred.data_ptr<scalar_t>(), gt.data_ptr<scalar_t>(),
                                       mask ? mask->data_ptr<scalar_t>() : nullptr, pred.numel()};
        loss = depth_l1<scalar_t>(in, scale_floor, need_grad ? grad.data_ptr<scalar_t>() : nullptr,
                                  static_cast<int>(num_threads));
    });
    return {torch::scalar_tensor(loss, pred.options()), grad};
}

}  // namespace cpu_rasterizer
