// EWA projection of 3D Gaussians (projection.py's project_gaussians), forward and
// backward. One Gaussian per loop iteration, OpenMP over Gaussians; the backward
// pass recomputes the forward's intermediates (a few hundred flops) instead of
// storing them. Operations follow the torch code in the same order, so float32
// results agree with it to rounding and float64 ones to the last bits.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "projection.h"
#include "quaternion.h"
#include "rasterizer.h"

namespace cpu_rasterizer {
namespace {

template <typename T>
struct Camera {
    T R[3][3];       // world-to-camera rotation
    T t[3];          // and translation
    T fx, fy, cx, cy;
    T lim_x, lim_y;  // Jacobian clamp of x / z and y / z
    T near_plane, eps_2d;
};

template <typename T>
Camera<T> make_camera(const ProjectionCamera<T>& c, const ProjectionSettings& st) {
    Camera<T> k;
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) k.R[i][j] = c.viewmat[4 * i + j];
        k.t[i] = c.viewmat[4 * i + 3];
    }
    k.fx = c.K[0];
    k.fy = c.K[4];
    k.cx = c.K[2];
    k.cy = c.K[5];
    // torch: a Python float (rounded to T) divided by the focal length
    k.lim_x = static_cast<T>(st.frustum_slack * 0.5 * static_cast<double>(st.width)) / k.fx;
    k.lim_y = static_cast<T>(st.frustum_slack * 0.5 * static_cast<double>(st.height)) / k.fy;
    k.near_plane = static_cast<T>(st.near_plane);
    k.eps_2d = static_cast<T>(st.eps_2d);
    return k;
}

// Rotation matrix of q / max(|q|, eps) (general_utils.quat_to_rotmat).
template <typename T>
struct Rotation : UnitQuat<T> {
    T m[3][3];
};

template <typename T>
inline Rotation<T> rotation(const T* q, T norm_eps) {
    Rotation<T> r;
    static_cast<UnitQuat<T>&>(r) = unit_quat(q, norm_eps);
    const T w = r.q[0], x = r.q[1], y = r.q[2], z = r.q[3];
    const T one(1), two(2);
    r.m[0][0] = one - two * (y * y + z * z);
    r.m[0][1] = two * (x * y - w * z);
    r.m[0][2] = two * (x * z + w * y);
    r.m[1][0] = two * (x * y + w * z);
    r.m[1][1] = one - two * (x * x + z * z);
    r.m[1][2] = two * (y * z - w * x);
    r.m[2][0] = two * (x * z - w * y);
    r.m[2][1] = two * (y * z + w * x);
    r.m[2][2] = one - two * (x * x + y * y);
    return r;
}

// The forward intermediates of one Gaussian.
template <typename T>
struct Projection {
    T p[3];          // camera-space mean (x, y, z)
    bool in_front;   // z > near plane
    T zs;            // z, or 1 when culled by the near plane
    T rx, ry;        // x / zs, y / zs
    T tx, ty;        // clamp(x / zs) zs, clamp(y / zs) zs
    T J[2][3];       // Jacobian of the perspective map
    Rotation<T> rot;
    T M[3][3];       // rotation diag(scale)
    T S[3][3];       // world covariance M M^T
    T Tm[2][3];      // J R
    T TS[2][3];      // Tm S
    T cov[2][2];     // screen covariance Tm S Tm^T, before the blur
    T a, b, c;       // blurred covariance entries
    T det, det_s;    // a c - b^2; det_s = det, or 1 when culled
    bool valid;      // in front and det > 0
};

// clamp(v, -lim, lim); NaN stays NaN, as in torch.
template <typename T>
inline T clamp_to(T v, T lim) {
    return std::min(std::max(v, -lim), lim);
}

template <typename T>
inline Projection<T> project_one(const Camera<T>& k, const T* mean, const T* scale, const T* quat, T norm_eps) {
    Projection<T> g;
    for (int i = 0; i < 3; ++i)
        g.p[i] = mean[0] * k.R[i][0] + mean[1] * k.R[i][1] + mean[2] * k.R[i][2] + k.t[i];
    const T x = g.p[0], y = g.p[1], z = g.p[2];
    g.in_front = z > k.near_plane;
    g.zs = g.in_front ? z : T(1);
    g.rx = x / g.zs;
    g.ry = y / g.zs;
    g.tx = clamp_to(g.rx, k.lim_x) * g.zs;
    g.ty = clamp_to(g.ry, k.lim_y) * g.zs;
    const T zs2 = g.zs * g.zs;
    g.J[0][0] = k.fx / g.zs;
    g.J[0][1] = T(0);
    g.J[0][2] = -k.fx * g.tx / zs2;
    g.J[1][0] = T(0);
    g.J[1][1] = k.fy / g.zs;
    g.J[1][2] = -k.fy * g.ty / zs2;
    g.rot = rotation(quat, norm_eps);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g.M[i][j] = g.rot.m[i][j] * scale[j];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g.S[i][j] = g.M[i][0] * g.M[j][0] + g.M[i][1] * g.M[j][1] + g.M[i][2] * g.M[j][2];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            g.Tm[i][j] = g.J[i][0] * k.R[0][j] + g.J[i][1] * k.R[1][j] + g.J[i][2] * k.R[2][j];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            g.TS[i][j] = g.Tm[i][0] * g.S[0][j] + g.Tm[i][1] * g.S[1][j] + g.Tm[i][2] * g.S[2][j];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j)
            g.cov[i][j] = g.TS[i][0] * g.Tm[j][0] + g.TS[i][1] * g.Tm[j][1] + g.TS[i][2] * g.Tm[j][2];
    g.a = g.cov[0][0] + k.eps_2d;
    g.b = g.cov[0][1];
    g.c = g.cov[1][1] + k.eps_2d;
    g.det = g.a * g.c - g.b * g.b;
    g.valid = g.in_front && g.det > T(0);
    g.det_s = g.valid ? g.det : T(1);
    return g;
}

// Reported radius: ceil(sigma_extent sqrt(major eigenvalue)) where the Gaussian is valid and
// its MAX_SUPPORT_SIGMAS circle meets the image, else 0.
template <typename T>
inline int32_t radius_of(const Projection<T>& g, T u, T v, const ProjectionSettings& st) {
    const T mid = T(0.5) * (g.a + g.c);
    const T gap = mid * mid - g.det;
    const T floor_gap = static_cast<T>(st.eigen_gap_floor);
    const T lam = mid + std::sqrt(gap < floor_gap ? floor_gap : gap);  // NaN passes through, as clamp_min
    const T root = std::sqrt(lam);
    const T radius = std::ceil(static_cast<T>(st.sigma_extent) * root);
    const T reach = static_cast<T>(st.max_support_sigmas) * root;
    const bool on_screen = (u + reach > T(0)) && (u - reach < static_cast<T>(st.width)) && (v + reach > T(0)) &&
                           (v - reach < static_cast<T>(st.height));
    if (!(g.valid && on_screen && radius >= T(0))) return 0;
    return static_cast<int32_t>(std::min(static_cast<double>(radius), 2147483647.0));
}

template <typename T>
inline void forward_one(const Camera<T>& k, const GeometryArrays<T>& gs, const ProjectionSettings& st,
                        const ProjectionOutputs<T>& out, int64_t i) {
    const Projection<T> g =
        project_one(k, gs.means + 3 * i, gs.scales + 3 * i, gs.quats + 4 * i, static_cast<T>(st.norm_eps));
    const T u = k.fx * g.p[0] / g.zs + k.cx;
    const T v = k.fy * g.p[1] / g.zs + k.cy;
    out.means2d[2 * i] = u;
    out.means2d[2 * i + 1] = v;
    out.conics[3 * i] = g.c / g.det_s;
    out.conics[3 * i + 1] = -g.b / g.det_s;
    out.conics[3 * i + 2] = g.a / g.det_s;
    out.depths[i] = g.p[2];
    out.radii[i] = radius_of(g, u, v, st);
    if (out.compensation != nullptr) {  // det(cov) / det(cov + eps I), 0 when culled
        const T floor2 = static_cast<T>(st.compensation_floor * st.compensation_floor);
        const T ratio = (g.cov[0][0] * g.cov[1][1] - g.b * g.b) / g.det_s;
        out.compensation[i] = g.valid ? std::sqrt(ratio < floor2 ? floor2 : ratio) : T(0);
    }
}

// Gradient of the loss w.r.t. the screen covariance entries (cov00, cov01, cov11) from the
// conic and compensation gradients.
template <typename T>
inline void covariance_grad(const Projection<T>& g, const T* g_conic, T g_comp, const ProjectionSettings& st,
                            T& g00, T& g01, T& g11) {
    const T ds = g.det_s;
    T ga = g_conic[2] / ds, gb = -g_conic[1] / ds, gc = g_conic[0] / ds;  // conic = (c, -b, a) / det_s
    T g_det = T(0);
    if (g.valid) g_det = -(g_conic[0] * g.c + g_conic[1] * -g.b + g_conic[2] * g.a) / (ds * ds);
    if (st.antialiased && g.valid) {
        const T det_raw = g.cov[0][0] * g.cov[1][1] - g.b * g.b;
        const T ratio = det_raw / ds;
        const T floor2 = static_cast<T>(st.compensation_floor * st.compensation_floor);
        if (ratio >= floor2) {  // clamp_min passes the gradient where ratio >= floor^2
            const T g_ratio = g_comp / (T(2) * std::sqrt(ratio));
            const T g_raw = g_ratio / ds;
            g_det -= g_ratio * det_raw / (ds * ds);
            ga += g_raw * g.cov[1][1];  // d det_raw / d cov00 (a - eps = cov00 has the gradient of a)
            gc += g_raw * g.cov[0][0];
            gb -= T(2) * g.b * g_raw;
        }
    }
    ga += g_det * g.c;  // det = a c - b^2
    gc += g_det * g.a;
    gb -= T(2) * g.b * g_det;
    g00 = ga;
    g01 = gb;
    g11 = gc;
}

template <typename T>
inline void backward_one(const Camera<T>& k, const GeometryArrays<T>& gs, const ProjectionSettings& st,
                         const ProjectionGradIn<T>& gin, const GeometryGrads<T>& out, int64_t i) {
    const T* scale = gs.scales + 3 * i;
    const Projection<T> g = project_one(k, gs.means + 3 * i, scale, gs.quats + 4 * i, static_cast<T>(st.norm_eps));
    T g00, g01, g11;
    covariance_grad(g, gin.conics + 3 * i, gin.compensation ? gin.compensation[i] : T(0), st, g00, g01, g11);
    // cov = Tm S Tm^T with only cov[0][1] read: d/dTm = (G + G^T) Tm S, d/dM = Tm^T (G + G^T) Tm M
    const T Gs[2][2] = {{T(2) * g00, g01}, {g01, T(2) * g11}};
    T dTm[2][3], A[2][3];
    for (int r = 0; r < 2; ++r)
        for (int j = 0; j < 3; ++j) {
            dTm[r][j] = Gs[r][0] * g.TS[0][j] + Gs[r][1] * g.TS[1][j];
            A[r][j] = Gs[r][0] * g.Tm[0][j] + Gs[r][1] * g.Tm[1][j];
        }
    T dS[3][3], dM[3][3];
    for (int r = 0; r < 3; ++r)
        for (int j = 0; j < 3; ++j) dS[r][j] = g.Tm[0][r] * A[0][j] + g.Tm[1][r] * A[1][j];
    for (int r = 0; r < 3; ++r)
        for (int j = 0; j < 3; ++j) dM[r][j] = dS[r][0] * g.M[0][j] + dS[r][1] * g.M[1][j] + dS[r][2] * g.M[2][j];
    T dJ[2][3];  // Tm = J R
    for (int r = 0; r < 2; ++r)
        for (int j = 0; j < 3; ++j) dJ[r][j] = dTm[r][0] * k.R[j][0] + dTm[r][1] * k.R[j][1] + dTm[r][2] * k.R[j][2];

    // J and means2d -> camera-space mean
    const T x = g.p[0], y = g.p[1], zs = g.zs, zs2 = zs * zs, zs3 = zs2 * zs;
    const T gu = gin.means2d[2 * i], gv = gin.means2d[2 * i + 1];
    T g_zs = -k.fx * dJ[0][0] / zs2 - k.fy * dJ[1][1] / zs2 + T(2) * k.fx * g.tx * dJ[0][2] / zs3 +
             T(2) * k.fy * g.ty * dJ[1][2] / zs3 - k.fx * x * gu / zs2 - k.fy * y * gv / zs2;
    T g_x = k.fx * gu / zs, g_y = k.fy * gv / zs;
    const T g_tx = -k.fx * dJ[0][2] / zs2, g_ty = -k.fy * dJ[1][2] / zs2;
    // t = clamp(r / zs) zs: the clamp passes the gradient inside [-lim, lim] (bounds included)
    g_zs += g_tx * clamp_to(g.rx, k.lim_x) + g_ty * clamp_to(g.ry, k.lim_y);
    const T g_rx = (g.rx >= -k.lim_x && g.rx <= k.lim_x) ? g_tx * zs : T(0);
    const T g_ry = (g.ry >= -k.lim_y && g.ry <= k.lim_y) ? g_ty * zs : T(0);
    g_x += g_rx / zs;
    g_y += g_ry / zs;
    g_zs -= g_rx * x / zs2 + g_ry * y / zs2;
    const T g_p[3] = {g_x, g_y, (g.in_front ? g_zs : T(0)) + gin.depths[i]};
    for (int j = 0; j < 3; ++j) out.means[3 * i + j] = k.R[0][j] * g_p[0] + k.R[1][j] * g_p[1] + k.R[2][j] * g_p[2];

    // M = rotation diag(scale)
    T dR[3][3];
    for (int j = 0; j < 3; ++j) {
        out.scales[3 * i + j] = dM[0][j] * g.rot.m[0][j] + dM[1][j] * g.rot.m[1][j] + dM[2][j] * g.rot.m[2][j];
        for (int r = 0; r < 3; ++r) dR[r][j] = dM[r][j] * scale[j];
    }
    const T w = g.rot.q[0], qx = g.rot.q[1], qy = g.rot.q[2], qz = g.rot.q[3];
    T gq[4] = {
        T(2) * (-qz * dR[0][1] + qy * dR[0][2] + qz * dR[1][0] - qx * dR[1][2] - qy * dR[2][0] + qx * dR[2][1]),
        T(2) * (qy * dR[0][1] + qz * dR[0][2] + qy * dR[1][0] - T(2) * qx * dR[1][1] - w * dR[1][2] + qz * dR[2][0] +
                w * dR[2][1] - T(2) * qx * dR[2][2]),
        T(2) * (-T(2) * qy * dR[0][0] + qx * dR[0][1] + w * dR[0][2] + qx * dR[1][0] + qz * dR[1][2] - w * dR[2][0] +
                qz * dR[2][1] - T(2) * qy * dR[2][2]),
        T(2) * (-T(2) * qz * dR[0][0] - w * dR[0][1] + qx * dR[0][2] + w * dR[1][0] - T(2) * qz * dR[1][1] +
                qy * dR[1][2] + qx * dR[2][0] + qy * dR[2][1]),
    };
    unit_quat_backward<T>(g.rot, gq, static_cast<T>(st.norm_eps), out.quats + 4 * i);
}

}  // namespace

template <typename scalar_t>
void project_forward(const GeometryArrays<scalar_t>& gs, const ProjectionCamera<scalar_t>& cam,
                     const ProjectionSettings& st, const ProjectionOutputs<scalar_t>& out, int num_threads) {
    const Camera<scalar_t> k = make_camera(cam, st);
#pragma omp parallel for num_threads(threads_for(gs.n, num_threads)) schedule(dynamic, kGaussianChunk)
    for (int64_t i = 0; i < gs.n; ++i) forward_one(k, gs, st, out, i);
}

template <typename scalar_t>
void project_backward(const GeometryArrays<scalar_t>& gs, const ProjectionCamera<scalar_t>& cam,
                      const ProjectionSettings& st, const ProjectionGradIn<scalar_t>& grad,
                      const GeometryGrads<scalar_t>& out, int num_threads) {
    const Camera<scalar_t> k = make_camera(cam, st);
#pragma omp parallel for num_threads(threads_for(gs.n, num_threads)) schedule(dynamic, kGaussianChunk)
    for (int64_t i = 0; i < gs.n; ++i) backward_one(k, gs, st, grad, out, i);
}

#define CR_INSTANTIATE_PROJECTION(T)                                                                              \
    template void project_forward<T>(const GeometryArrays<T>&, const ProjectionCamera<T>&,                       \
                                     const ProjectionSettings&, const ProjectionOutputs<T>&, int);               \
    template void project_backward<T>(const GeometryArrays<T>&, const ProjectionCamera<T>&,                      \
                                      const ProjectionSettings&, const ProjectionGradIn<T>&, const GeometryGrads<T>&, \
                                      int);
CR_INSTANTIATE_PROJECTION(float)
CR_INSTANTIATE_PROJECTION(double)
#undef CR_INSTANTIATE_PROJECTION

}  // namespace cpu_rasterizer
