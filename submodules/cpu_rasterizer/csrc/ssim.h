// Torch-free interface of the fused training colour loss (ssim.cpp):
//
//   loss = (1 - lambda) * masked_mean(|img - gt|, m)
//        + lambda * (1 - masked_mean(ssim_map(img * m, gt * m), m))
//
// as utils/loss_utils.py composes it in torch (which stays the reference), and its
// gradient w.r.t. img. ssim_map: separable Gaussian window (taps given), zero padding,
// SSIM constants c1, c2. masked_mean(x, m) = sum(x * m) / max(C * sum(m), 1) with the
// [H, W] mask broadcast over channels; without a mask m = 1.
#pragma once

#include <cstdint>

#include "rasterizer.h"

namespace cpu_rasterizer {

// Settings, passed in from Python (utils/loss_utils.py holds the constants).
struct DssimSettings {
    double lambda;        // weight of the D-SSIM term; 0 = L1 only
    double c1;            // SSIM stabilisers
    double c2;
    const double* taps;   // [2 * radius + 1] normalised, symmetric window
    int64_t radius;
};

template <typename scalar_t>
struct DssimImages {
    const scalar_t* img;   // [C, H, W] the rendered image
    const scalar_t* gt;    // [C, H, W]
    const scalar_t* mask;  // [H, W] weights, or nullptr (all pixels count)
    int64_t channels;
    int64_t height;
    int64_t width;
};

// The loss; when `grad` is not null, also d loss / d img into grad [C, H, W] (every entry written).
// Deterministic: the same result for any thread count.
template <typename scalar_t>
double l1_dssim(const DssimImages<scalar_t>& in, const DssimSettings& st, scalar_t* grad, Isa isa,
                int num_threads);

}  // namespace cpu_rasterizer
