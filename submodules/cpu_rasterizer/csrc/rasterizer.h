// Torch-free interface of the CPU tile rasterizer (only bindings.cpp sees torch,
// which keeps the build fast).
//
// The compositing contract is the one in gaussian_renderer/backends/common.py:
// every Gaussian with a positive radius is considered for every pixel, front to
// back in (stable) depth order, with alpha = min(alpha_max, o * exp(power)),
// skipped where power > 0 or alpha < alpha_min, and a pixel stops before the
// Gaussian that would push its transmittance below t_min. Gaussians are binned
// into the tiles their support ellipse (where alpha can reach alpha_min) meets.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace cpu_rasterizer {

// Thresholds of the contract, passed in from Python (common.py is the single
// source of truth) and rounded to the working precision like torch does when
// it compares a float tensor with a Python scalar.
template <typename scalar_t>
struct Thresholds {
    scalar_t alpha_max;
    scalar_t alpha_min;
    scalar_t t_min;
};

// Instruction set of the tile kernels: kAuto = AVX2 when the CPU has it, else
// the portable build (SSE2 on x86-64); kGeneric forces the portable build.
enum class Isa : int64_t { kAuto = 0, kGeneric = 1, kAvx2 = 2 };

// True when this CPU can run the AVX2 kernels (checked at run time, so one
// binary serves every x86-64 machine).
bool avx2_supported();

// Threads worth starting for `work` independent items: waking an OpenMP team
// costs microseconds on an idle machine but milliseconds on a busy one, so small
// problems (gradient checks, thumbnails) run on the calling thread.
constexpr int64_t kMinWorkPerThread = 4096;
inline int threads_for(int64_t work, int num_threads) {
    const int64_t useful = work / kMinWorkPerThread;
    return static_cast<int>(useful < 1 ? 1 : (useful < num_threads ? useful : num_threads));
}

// Member t's contiguous share [lo, hi) = [n t / team, n (t + 1) / team) of n items split over a team.
struct Share {
    int64_t lo, hi;
};
inline Share share_of(int64_t n, int64_t t, int64_t team) { return {n * t / team, n * (t + 1) / team}; }

// Image / tile grid geometry.
struct Grid {
    int64_t width;
    int64_t height;
    int64_t tile;
    int64_t tiles_x;
    int64_t tiles_y;

    Grid(int64_t w, int64_t h, int64_t t)
        : width(w), height(h), tile(t), tiles_x((w + t - 1) / t), tiles_y((h + t - 1) / t) {}
    int64_t n_tiles() const { return tiles_x * tiles_y; }
};

// Per-tile front-to-back Gaussian lists (CSR layout).
struct BinsView {
    const int32_t* gauss_ids;  // [P], grouped by tile, front to back
    const int64_t* offsets;    // [T + 1], tile t owns gauss_ids[offsets[t]:offsets[t+1]]
};

// Where binning writes its lists: offsets [T + 1] are preallocated; the id array
// is requested once its length (the number of pairs) is known.
struct BinsOut {
    int64_t* offsets;
    std::function<int32_t*(int64_t)> alloc_ids;
};

// Projected Gaussians (contiguous, row-major).
template <typename scalar_t>
struct GaussianArrays {
    const scalar_t* means2d;    // [N, 2]
    const scalar_t* conics;     // [N, 3]
    const scalar_t* opacities;  // [N]
    const scalar_t* colors;     // [N, C]
    int64_t n;
    int64_t channels;
};

template <typename scalar_t>
struct ForwardOutputs {  // every pixel is written
    scalar_t* image;     // [C, H, W]
    scalar_t* alpha;     // [H, W]
    double* final_t;     // [H, W]
    int32_t* n_contrib;  // [H, W]
};

template <typename scalar_t>
struct BackwardInputs {
    const scalar_t* grad_image;  // [C, H, W]
    const scalar_t* grad_alpha;  // [H, W]
    const double* final_t;       // [H, W]
    const int32_t* n_contrib;    // [H, W]
};

template <typename scalar_t>
struct Gradients {
    scalar_t* means2d;    // [N, 2]  (fully overwritten)
    scalar_t* conics;     // [N, 3]
    scalar_t* opacities;  // [N]
    scalar_t* colors;     // [N, C]
};

// Sort (tile, Gaussian) pairs by tile, then depth (stable, NaN last); same tile
// sets as common.bin_gaussians (identical floating-point operations).
template <typename scalar_t>
void bin_gaussians(const GaussianArrays<scalar_t>& gs, const int32_t* radii, const double* depths, const Grid& grid,
                   scalar_t alpha_min, const BinsOut& out);

// Bin, then composite; the bins are written to `bins` (saved for the backward pass).
template <typename scalar_t>
void composite_forward(const GaussianArrays<scalar_t>& gs, const int32_t* radii, const double* depths,
                       const Grid& grid, const Thresholds<scalar_t>& th, const ForwardOutputs<scalar_t>& out,
                       const BinsOut& bins, Isa isa, int num_threads);

template <typename scalar_t>
void composite_backward(const GaussianArrays<scalar_t>& gs, const BinsView& bins, const Grid& grid,
                        const Thresholds<scalar_t>& th, const BackwardInputs<scalar_t>& bi,
                        const Gradients<scalar_t>& out, Isa isa, int num_threads);

}  // namespace cpu_rasterizer
