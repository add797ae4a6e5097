// Torch-free per-pixel ops around the compositing (image_ops.cpp). Each has a torch reference in
// Python, which stays the definition the tests hold these to:
//
//  * finish (gaussian_renderer/backends/common.py, finish_outputs): render()'s image and depth from
//    the compositing's channel sums `out` [C, P] and `alpha` [P]:
//        image[c] = out[c] + (1 - alpha) bg[c]   (c = 0, 1, 2)
//        depth    = out[d] / max(alpha, floor)   (d = the depth channel)
//    and the backward pass of both into d/d out (rows 0-2 and d) and d/d alpha.
//  * depth L1 (utils/loss_utils.py, depth_l1_torch), with v = (gt > 0) m and n = max(sum v, 1):
//        loss = (sum |pred - gt| v / n) / max(sum gt v / n, scale_floor)
//    and its gradient w.r.t. pred (the scale is a constant, as the reference detaches it).
//
// Sums are taken in double per block of kSumBlock pixels and added in block order, so the results
// do not depend on the thread count.
#pragma once

#include <cstdint>

namespace cpu_rasterizer {

constexpr int kColorChannels = 3;

template <typename T>
struct FinishPlanes {
    const T* out;    // [C, P] composited channel sums
    const T* alpha;  // [P]
    const T* bg;     // [3]
    int64_t channels;
    int64_t depth_channel;  // 3 <= d < C
    int64_t pixels;
};

// image [3, P], depth [P] (every entry written).
template <typename T>
void finish_forward(const FinishPlanes<T>& in, T alpha_floor, T* image, T* depth, int num_threads);

// From d loss / d image [3, P] and d loss / d depth [P] (either may be null: zero), writes rows 0-2 and d of
// grad_out [C, P] and every entry of grad_alpha [P]; the caller fills the other rows of grad_out.
template <typename T>
void finish_backward(const FinishPlanes<T>& in, T alpha_floor, const T* grad_image, const T* grad_depth, T* grad_out,
                     T* grad_alpha, int num_threads);

template <typename T>
struct DepthL1Maps {
    const T* pred;  // [P]
    const T* gt;    // [P]
    const T* mask;  // [P] weights, or null (every pixel counts)
    int64_t pixels;
};

// The loss; when `grad` is not null, also d loss / d pred into grad [P] (every entry written).
template <typename T>
double depth_l1(const DepthL1Maps<T>& in, double scale_floor, T* grad, int num_threads);

}  // namespace cpu_rasterizer
