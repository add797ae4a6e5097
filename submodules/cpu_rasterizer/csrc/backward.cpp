// Backward compositing: one OpenMP task per tile, Gaussians back to front.
//
// For a pixel with weights w_i = alpha_i T_i, out = sum_i w_i col_i, A = sum_i w_i
// and upstream gradients g (colour) and gA (alpha), let cg_i = col_i . g + gA and
// S_i = sum_{j > i} w_j cg_j (later contributors). Then
//   dL/dcol_i   = w_i g
//   dL/dalpha_i = T_i cg_i - S_i / (1 - alpha_i)
// T_i is recovered back to front from the final transmittance: T_i = T_{i+1} / (1 - alpha_i).
// Per-Gaussian sums of a tile are added to the shared gradients under a
// striped spin lock (no per-thread copies of the gradient buffers).
#include <atomic>
#include <memory>

#include "tile_common.h"

namespace cpu_rasterizer {
namespace {

constexpr int64_t kLockStripes = 4096;  // power of two: Gaussian g uses lock g & (kLockStripes - 1)

class StripedLocks {
   public:
    StripedLocks() : flags_(new std::atomic<bool>[kLockStripes]) {
        for (int64_t i = 0; i < kLockStripes; ++i) flags_[i].store(false, std::memory_order_relaxed);
    }
    void lock(int64_t key) {
        std::atomic<bool>& f = flags_[key & (kLockStripes - 1)];
        while (f.exchange(true, std::memory_order_acquire)) {
            while (f.load(std::memory_order_relaxed)) {
            }
        }
    }
    void unlock(int64_t key) { flags_[key & (kLockStripes - 1)].store(false, std::memory_order_release); }

   private:
    std::unique_ptr<std::atomic<bool>[]> flags_;
};

template <typename scalar_t>
struct Gradients {
    scalar_t* means2d;    // [N, 2]
    scalar_t* conics;     // [N, 3]
    scalar_t* opacities;  // [N]
    scalar_t* colors;     // [N, C]
};

// Upstream gradients and forward state of the whole image.
template <typename scalar_t>
struct BackwardInputs {
    const scalar_t* grad_image;  // [C, H, W]
    const scalar_t* grad_alpha;  // [H, W]
    const double* final_t;       // [H, W]
    const int32_t* n_contrib;    // [H, W]
};

// Sums of one Gaussian over the pixels of one tile.
template <typename scalar_t>
struct Partial {
    double mx, my, a, b, c, o;
    std::vector<scalar_t> color;  // [C]
    bool touched;

    explicit Partial(int64_t channels) : color(channels) { clear(); }
    void clear() {
        mx = my = a = b = c = o = 0.0;
        std::fill(color.begin(), color.end(), scalar_t(0));
        touched = false;
    }
};

template <typename scalar_t>
struct BackwardScratch {
    std::vector<double> trans;         // [P] transmittance after the current Gaussian
    std::vector<double> later;         // [P] S: sum over later contributors of w cg
    std::vector<int32_t> last;         // [P] 1 + list position of the last contributor
    std::vector<scalar_t> grad;        // [C, P] upstream colour gradient
    std::vector<scalar_t> grad_alpha;  // [P]
    std::vector<int32_t> row_last;     // [tile] max of last over the row
    std::vector<scalar_t> alpha, gauss, cg, weight;  // [tile] row span buffers
    Partial<scalar_t> part;

    BackwardScratch(int64_t tile, int64_t channels)
        : trans(tile * tile), later(tile * tile), last(tile * tile), grad(channels * tile * tile),
          grad_alpha(tile * tile), row_last(tile), alpha(tile), gauss(tile), cg(tile), weight(tile), part(channels) {}

    // Load the tile's forward state and upstream gradients; returns the longest contributor count.
    int32_t load(const TileView& v, const BackwardInputs<scalar_t>& bi, const Grid& grid, int64_t channels) {
        const int64_t plane = grid.tile * grid.tile, hw = grid.width * grid.height;
        std::fill(row_last.begin(), row_last.end(), 0);
        std::fill(last.begin(), last.end(), 0);
        int32_t longest = 0;
        for (int64_t r = 0; r < v.rows; ++r) {
            const int64_t dst = r * grid.tile, src = (v.y0 + r) * grid.width + v.x0;
            for (int64_t ch = 0; ch < channels; ++ch)
                std::copy_n(bi.grad_image + ch * hw + src, v.cols, grad.data() + ch * plane + dst);
            std::copy_n(bi.grad_alpha + src, v.cols, grad_alpha.data() + dst);
            std::copy_n(bi.final_t + src, v.cols, trans.data() + dst);
            std::copy_n(bi.n_contrib + src, v.cols, last.data() + dst);
            for (int64_t c = 0; c < v.cols; ++c) last[dst + c] = std::min<int32_t>(last[dst + c], v.count);
            std::fill_n(later.data() + dst, v.cols, 0.0);
            row_last[r] = *std::max_element(last.data() + dst, last.data() + dst + v.cols);
            longest = std::max(longest, row_last[r]);
        }
        return longest;
    }
};

// cg = gA + sum_c col[c] g[c] over a row span (vectorisable over pixels).
template <typename scalar_t>
void colour_dot(BackwardScratch<scalar_t>& s, int64_t p0, int64_t n, const scalar_t* __restrict__ color,
                int64_t channels, int64_t plane) {
    scalar_t* __restrict__ cg = s.cg.data();
    std::copy_n(s.grad_alpha.data() + p0, n, cg);
    for (int64_t ch = 0; ch < channels; ++ch) {
        const scalar_t* __restrict__ g = s.grad.data() + ch * plane + p0;
        const scalar_t cc = color[ch];
        for (int64_t i = 0; i < n; ++i) cg[i] += cc * g[i];
    }
}

// Gradients of one row span of Gaussian g at list position k.
template <typename scalar_t>
void backward_span(BackwardScratch<scalar_t>& s, const PackedGaussian<scalar_t>& g, const Thresholds<scalar_t>& th,
                   int64_t k, int64_t p0, int64_t n, scalar_t x_first, scalar_t py, int64_t channels,
                   int64_t plane) {
    Partial<scalar_t>& part = s.part;
    bool any = false;
    const scalar_t dy = g.my - py;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t p = p0 + i;
        const scalar_t al = s.alpha[i];
        s.weight[i] = scalar_t(0);
        if (al == scalar_t(0) || k >= s.last[p]) continue;
        const scalar_t one_minus = scalar_t(1) - al;
        const double t_before = s.trans[p] / static_cast<double>(one_minus);
        s.trans[p] = t_before;
        const scalar_t w = al * static_cast<scalar_t>(t_before);
        s.weight[i] = w;
        any = true;
        const double cg = static_cast<double>(s.cg[i]);
        const double d_alpha = t_before * cg - s.later[p] / static_cast<double>(one_minus);
        s.later[p] += static_cast<double>(w) * cg;
        const scalar_t e = s.gauss[i];
        if (!(g.o * e <= th.alpha_max)) continue;  // clamped at alpha_max: no gradient to o or power
        part.o += static_cast<double>(e) * d_alpha;
        const double d_power = static_cast<double>(g.o * e) * d_alpha;
        const double dx = static_cast<double>(g.mx - ((x_first + static_cast<scalar_t>(i)) + scalar_t(0.5)));
        const double dyd = static_cast<double>(dy);
        part.mx -= d_power * (static_cast<double>(g.a) * dx + static_cast<double>(g.b) * dyd);
        part.my -= d_power * (static_cast<double>(g.c) * dyd + static_cast<double>(g.b) * dx);
        part.a -= 0.5 * d_power * dx * dx;
        part.b -= d_power * dx * dyd;
        part.c -= 0.5 * d_power * dyd * dyd;
    }
    if (!any) return;
    part.touched = true;
    for (int64_t ch = 0; ch < channels; ++ch) {
        const scalar_t* __restrict__ gr = s.grad.data() + ch * plane + p0;
        scalar_t sum = scalar_t(0);
        for (int64_t i = 0; i < n; ++i) sum += s.weight[i] * gr[i];
        part.color[ch] += sum;
    }
}

template <typename scalar_t>
void commit(const Partial<scalar_t>& part, int32_t gid, int64_t channels, const Gradients<scalar_t>& out,
            StripedLocks& locks) {
    locks.lock(gid);
    out.means2d[2 * gid] += static_cast<scalar_t>(part.mx);
    out.means2d[2 * gid + 1] += static_cast<scalar_t>(part.my);
    out.conics[3 * gid] += static_cast<scalar_t>(part.a);
    out.conics[3 * gid + 1] += static_cast<scalar_t>(part.b);
    out.conics[3 * gid + 2] += static_cast<scalar_t>(part.c);
    out.opacities[gid] += static_cast<scalar_t>(part.o);
    scalar_t* dst = out.colors + static_cast<int64_t>(gid) * channels;
    for (int64_t ch = 0; ch < channels; ++ch) dst[ch] += part.color[ch];
    locks.unlock(gid);
}

template <typename scalar_t>
void backward_tile(const TileView& v, const RasterInputs<scalar_t>& in, const BackwardInputs<scalar_t>& bi,
                   BackwardScratch<scalar_t>& s, const Gradients<scalar_t>& out, StripedLocks& locks) {
    const int64_t tile = in.grid.tile, plane = tile * tile, channels = in.channels;
    const int32_t longest = s.load(v, bi, in.grid, channels);
    for (int64_t k = longest - 1; k >= 0; --k) {
        const int32_t gid = v.ids[k];
        const PackedGaussian<scalar_t>& g = in.packed[gid];
        int64_t r0, r1;
        if (g.never || !support_rows(g, v.y0, v.rows, r0, r1)) continue;
        const scalar_t* color = in.colors + static_cast<int64_t>(gid) * channels;
        s.part.clear();
        for (int64_t r = r0; r <= r1; ++r) {
            if (s.row_last[r] <= k) continue;
            const double py = static_cast<double>(v.y0 + r) + 0.5;
            int64_t c0, c1;
            if (!support_cols(g, py, v.x0, v.cols, c0, c1)) continue;
            const int64_t n = c1 - c0 + 1, p0 = r * tile + c0;
            const scalar_t x_first = static_cast<scalar_t>(v.x0 + c0);
            alpha_row(g, x_first, static_cast<scalar_t>(py), n, in.th, s.alpha.data(), s.gauss.data());
            colour_dot(s, p0, n, color, channels, plane);
            backward_span(s, g, in.th, k, p0, n, x_first, static_cast<scalar_t>(py), channels, plane);
        }
        if (s.part.touched) commit(s.part, gid, channels, out, locks);
    }
}

template <typename scalar_t>
void backward_all(const RasterInputs<scalar_t>& in, const Bins& bins, const BackwardInputs<scalar_t>& bi,
                  const Gradients<scalar_t>& out, int num_threads) {
    const std::vector<int64_t> tiles = busy_tiles(bins);
    const int64_t n_busy = static_cast<int64_t>(tiles.size());
    StripedLocks locks;
#pragma omp parallel num_threads(num_threads)
    {
        BackwardScratch<scalar_t> scratch(in.grid.tile, in.channels);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n_busy; ++i)
            backward_tile(tile_view(in.grid, bins, tiles[i]), in, bi, scratch, out, locks);
    }
}

}  // namespace

std::vector<torch::Tensor> composite_backward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                              const torch::Tensor& opacities, const torch::Tensor& colors,
                                              const Bins& bins, const torch::Tensor& final_t,
                                              const torch::Tensor& n_contrib, const torch::Tensor& grad_image,
                                              const torch::Tensor& grad_alpha, const Grid& grid, double alpha_max,
                                              double alpha_min, double t_min, int num_threads) {
    torch::Tensor d_means = torch::zeros_like(means2d);
    torch::Tensor d_conics = torch::zeros_like(conics);
    torch::Tensor d_opac = torch::zeros_like(opacities);
    torch::Tensor d_colors = torch::zeros_like(colors);
    AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "cpu_rasterizer_backward", [&] {
        const RasterInputs<scalar_t> in = make_inputs<scalar_t>(means2d, conics, opacities, colors, grid, alpha_max,
                                                                alpha_min, t_min, num_threads);
        const BackwardInputs<scalar_t> bi{grad_image.data_ptr<scalar_t>(), grad_alpha.data_ptr<scalar_t>(),
                                          final_t.data_ptr<double>(), n_contrib.data_ptr<int32_t>()};
        const Gradients<scalar_t> out{d_means.data_ptr<scalar_t>(), d_conics.data_ptr<scalar_t>(),
                                      d_opac.data_ptr<scalar_t>(), d_colors.data_ptr<scalar_t>()};
        backward_all(in, bins, bi, out, num_threads);
    });
    return {d_means, d_conics, d_opac, d_colors};
}

}  // namespace cpu_rasterizer
