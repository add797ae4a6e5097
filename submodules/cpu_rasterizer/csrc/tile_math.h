// Per-Gaussian data packed for the tile loops, its exact-support bounds and the
// per-row alpha evaluation shared by the forward and backward passes (so both
// see bit-identical alphas).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "rasterizer.h"
#include "simd.h"

namespace cpu_rasterizer {

// ---------------------------------------------------------------------------
// Packed Gaussian: parameters in the working precision plus the bounding
// ellipse of the pixels where alpha can reach alpha_min.
// ---------------------------------------------------------------------------
// One cache line each (64 bytes for float): unaligned, most would straddle two lines, and the
// tile loops' prefetch fetches only the first.
template <typename scalar_t>
struct alignas(64) PackedGaussian {
    scalar_t mx, my, a, b, c, o;
    double q2;    // a dx^2 + 2 b dx dy + c dy^2 <= q2 holds for every pixel that can pass alpha_min
    double det;   // a c - b^2 (double)
    double hx;    // half width of the support box (pixels)
    double hy;    // half height of the support box (pixels)
    bool bounded; // false: no usable ellipse (degenerate conic / non-finite), test every pixel
    bool never;   // opacity below alpha_min: can never pass
};

// Safety factor on the rounding error bound of the working-precision power,
// in units of the machine epsilon (the real error is a few ulp). Mirrors
// common.SUPPORT_SLACK_ULPS (the binning tests compare both backends' tile lists).
constexpr double kSupportSlackUlps = 256.0;
// Extra margin (pixels) on each end of a row's span and of a tile's pixel-centre
// rectangle in the binning; mirrors common.SPAN_MARGIN_PX.
constexpr double kSpanMarginPx = 1e-3;

// Inflated level set so that the float evaluation of any pixel outside it is
// guaranteed to fail alpha >= alpha_min (contract stays exact). Same float64
// operations, in the same order, as common.support() on the Python side.
template <typename scalar_t>
PackedGaussian<scalar_t> pack_gaussian(const scalar_t* m, const scalar_t* con, scalar_t o, scalar_t alpha_min) {
    PackedGaussian<scalar_t> g{m[0], m[1], con[0], con[1], con[2], o, 0.0, 0.0, 0.0, 0.0, false, false};
    const double eps = std::numeric_limits<scalar_t>::epsilon();
    // alpha <= o * exp(power <= 0) <= o (up to ~1 ulp of exp): below alpha_min it never passes.
    if (o < alpha_min * static_cast<scalar_t>(1.0 - 16 * eps)) {
        g.never = true;
        return g;
    }
    const double a = g.a, b = g.b, c = g.c, mx = g.mx, my = g.my;
    const double det = a * c - b * b;
    const bool finite = std::isfinite(mx) && std::isfinite(my) && std::isfinite(a) && std::isfinite(b) &&
                        std::isfinite(c) && std::isfinite(static_cast<double>(o));
    if (!finite || !(a > 0.0) || !(det > 0.0)) return g;  // unbounded: evaluate the whole tile
    // alpha >= alpha_min  <=>  -power <= log(o / alpha_min)  <=>  form <= 2 log(o / alpha_min)
    double q2 = 2.0 * std::max(0.0, std::log(static_cast<double>(o) / static_cast<double>(alpha_min)));
    double hx = std::sqrt(q2 * c / det), hy = std::sqrt(q2 * a / det);
    const double terms = a * hx * hx + c * hy * hy + 2.0 * std::fabs(b) * hx * hy;
    const double slope = (a + std::fabs(b)) * hx + (c + std::fabs(b)) * hy;
    const double coord = std::fabs(mx) + std::fabs(my) + hx + hy + 1.0;
    q2 += kSupportSlackUlps * eps * (terms + q2 + 1.0 + slope * coord);
    g.q2 = q2;
    g.det = det;
    g.hx = std::sqrt(q2 * c / det);
    g.hy = std::sqrt(q2 * a / det);
    g.bounded = std::isfinite(g.hx) && std::isfinite(g.hy);
    return g;
}

// Inclusive integer range [lo, hi] of pixel indices whose centres (index + 0.5 +
// origin) lie in [centre - half, centre + half], clamped to [0, n - 1].
CR_INLINE bool pixel_range(double centre, double half, int64_t origin, int64_t n, int64_t& lo, int64_t& hi) {
    const double first = centre - half - kSpanMarginPx - 0.5 - static_cast<double>(origin);
    const double last = centre + half + kSpanMarginPx - 0.5 - static_cast<double>(origin);
    if (!(last >= 0.0) || !(first <= static_cast<double>(n - 1))) return false;
    lo = first <= 0.0 ? 0 : static_cast<int64_t>(std::ceil(first));
    hi = last >= static_cast<double>(n - 1) ? n - 1 : static_cast<int64_t>(std::floor(last));
    return lo <= hi;
}

// Rows (tile-local) of a tile that can hold support pixels of g.
template <typename scalar_t>
CR_INLINE bool support_rows(const PackedGaussian<scalar_t>& g, int64_t y_origin, int64_t rows, int64_t& r0, int64_t& r1) {
    if (!g.bounded) {
        r0 = 0;
        r1 = rows - 1;
        return rows > 0;
    }
    return pixel_range(static_cast<double>(g.my), g.hy, y_origin, rows, r0, r1);
}

// Columns (tile-local) of each row holding support pixels of g (the ellipse's chords), with the
// row-invariant terms computed once per (Gaussian, tile). The chords only choose which chunks are
// evaluated (every pixel is still tested against alpha_min), so they may be a little wider than the
// support but never narrower: kSpanMarginPx covers the rounding of the reciprocal.
template <typename scalar_t>
struct SupportChords {
    double mx, my, inv_a, slope, qa, det;
    bool bounded;

    CR_INLINE explicit SupportChords(const PackedGaussian<scalar_t>& g)
        : mx(g.mx), my(g.my), inv_a(1.0 / static_cast<double>(g.a)), slope(static_cast<double>(g.b) * inv_a),
          qa(g.q2 * static_cast<double>(g.a)), det(g.det), bounded(g.bounded) {}

    // Columns [c0, c1] of the rows at pixel-centre y = py, one row per lane of a double vector D, as
    // doubles, without branches (data-dependent branches per row cost more than the arithmetic); c0 > c1
    // where a row misses the support.
    template <typename D>
    CR_INLINE void col_spans(const D& py, double x_origin, double n_cols, D& c0, D& c1) const {
        const D zero{};
        if (!bounded) {
            c0 = zero;
            c1 = zero + (n_cols - 1.0);
            return;
        }
        const D dy = my - py;
        const D disc = qa - det * dy * dy;
        const D half = lanewise<LaneOp::kSqrt>(select(disc < 0.0, zero, disc)) * inv_a;  // as std::max(disc, 0.0)
        const D centre = mx + slope * dy - 0.5 - x_origin;
        // written so that a NaN end (inf - inf for an extreme conic) widens the span to the tile's edge
        const D lo = lanewise<LaneOp::kCeil>(centre - half - kSpanMarginPx);
        const D hi = lanewise<LaneOp::kFloor>(centre + half + kSpanMarginPx);
        c0 = select(lo > 0.0, lo, zero);
        c1 = select(hi < n_cols - 1.0, hi, zero + (n_cols - 1.0));
        c1 = select(disc >= 0.0, c1, zero - 1.0);
    }
};

// min over v in [v0, v1] of a u^2 + 2 b u v + c v^2 (c > 0), as det/c u^2 + c (v - v*)^2
// (a sum of non-negative terms: no cancellation); inv_c = 1 / c, det_c = det / c. Same
// operations as common._edge_min.
CR_INLINE double edge_min(double u, double v0, double v1, double b, double c, double inv_c, double det_c) {
    const double vs = -b * u * inv_c;
    const double vc = std::min(std::max(vs, v0), v1);
    return det_c * u * u + c * (vc - vs) * (vc - vs);
}

// Whether the support ellipse of a bounded g meets the rectangle [x0, x1] x [y0, y1]:
// the form's minimum over it is 0 when the mean is inside, else the least of its
// minima over the four edges. Same operations as common.ellipse_meets_rect.
template <typename scalar_t>
CR_INLINE bool ellipse_meets_rect(const PackedGaussian<scalar_t>& g, double x0, double x1, double y0, double y1) {
    const double u0 = x0 - static_cast<double>(g.mx), u1 = x1 - static_cast<double>(g.mx);
    const double v0 = y0 - static_cast<double>(g.my), v1 = y1 - static_cast<double>(g.my);
    if (u0 <= 0.0 && u1 >= 0.0 && v0 <= 0.0 && v1 >= 0.0) return true;
    const double a = g.a, b = g.b, c = g.c, inv_a = 1.0 / a, inv_c = 1.0 / c;
    const double det_a = g.det * inv_a, det_c = g.det * inv_c;
    double best = std::min(edge_min(u0, v0, v1, b, c, inv_c, det_c), edge_min(u1, v0, v1, b, c, inv_c, det_c));
    best = std::min(best, edge_min(v0, u0, u1, b, a, inv_a, det_a));
    best = std::min(best, edge_min(v1, u0, u1, b, a, inv_a, det_a));
    return best <= g.q2;
}

// alpha of g at the pixel centres (px[i], py) of a row chunk, 0 where the contract skips the Gaussian (its
// alpha >= alpha_min > 0 elsewhere); gauss = exp(power) for the backward pass. The row enters as
// dy = g.my - py and cdydy = (g.c dy) dy (computed once per row). Same float operations, in the same order,
// as the torch reference.
template <typename scalar_t, int kBytes>
CR_INLINE void eval_chunk(const PackedGaussian<scalar_t>& g, const typename Simd<scalar_t, kBytes>::V& px,
                          scalar_t dy, scalar_t cdydy, const Thresholds<scalar_t>& th,
                          typename Simd<scalar_t, kBytes>::V& alpha, typename Simd<scalar_t, kBytes>::V& gauss) {
    using V = typename Simd<scalar_t, kBytes>::V;
    using M = typename Simd<scalar_t, kBytes>::M;
    const V dx = g.mx - px;
    const V power = scalar_t(-0.5) * ((g.a * dx) * dx + cdydy) - (g.b * dx) * dy;
    gauss = exp_nonpositive<scalar_t, kBytes>(power);
    const V raw = g.o * gauss;
    // NaN-propagating clamp (torch.clamp_max keeps NaN; NaN then fails alpha >= alpha_min)
    const V al = clamp_to<Bound::kUpper>(raw, th.alpha_max);
    const M keep = (power <= scalar_t(0)) & (al >= th.alpha_min);
    alpha = select(keep, al, V{});
}

}  // namespace cpu_rasterizer
