// q / max(|q|, eps) (utils/general_utils.normalize) and its backward pass, shared by the projection (which
// normalises the quaternions it is given) and the geometry kernel (which returns unit quaternions).
#pragma once

#include <algorithm>
#include <cmath>

namespace cpu_rasterizer {

// A normalised quaternion and what its backward pass needs.
template <typename T>
struct UnitQuat {
    T q[4];   // q / scale (w, x, y, z)
    T norm;   // |q| before the clamp
    T scale;  // max(|q|, eps)
};

template <typename T>
inline UnitQuat<T> unit_quat(const T* q, T norm_eps) {
    UnitQuat<T> u;
    u.norm = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    u.scale = std::max(u.norm, norm_eps);  // NaN stays NaN, as in torch's clamp_min
    for (int i = 0; i < 4; ++i) u.q[i] = q[i] / u.scale;
    return u;
}

// d_q [4] = the gradient w.r.t. q from g [4], the gradient w.r.t. the unit quaternion: the direct term, less
// the radial part through the norm where it passes the clamp (|q| >= eps, autograd's choice at the clamp;
// below it the scale is the constant eps).
template <typename T>
inline void unit_quat_backward(const UnitQuat<T>& u, const T* g, T norm_eps, T* d_q) {
    const T radial = u.norm >= norm_eps ? g[0] * u.q[0] + g[1] * u.q[1] + g[2] * u.q[2] + g[3] * u.q[3] : T(0);
    for (int j = 0; j < 4; ++j) d_q[j] = (g[j] - radial * u.q[j]) / u.scale;
}

}  // namespace cpu_rasterizer
