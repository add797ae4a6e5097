"""Feature maps -> RGB via one fixed PCA projection (stable colours across views and time)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

PCA_SAMPLES = 20000  # feature vectors used to fit the projection
COLOR_PERCENTILES = (0.01, 0.99)  # robust range mapped to [0, 1]


@dataclass
class FeaturePCA:
    """Projection of D-dim features onto 3 principal components, scaled to [0, 1].

    mean: [D]; components: [D, 3]; lo, hi: [3] range of the projected training features.
    """

    mean: torch.Tensor
    components: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor, seed: int = 0) -> "FeaturePCA":
        """Fit on [M, D] feature vectors (subsampled, seeded)."""
        x = features.detach().float().reshape(-1, features.shape[-1])
        if x.shape[0] > PCA_SAMPLES:
            g = torch.Generator(device="cpu").manual_seed(seed)
            x = x[torch.randperm(x.shape[0], generator=g)[:PCA_SAMPLES].to(x.device)]
        mean = x.mean(0)
        xc = x - mean
        k = min(3, xc.shape[1])
        _, _, v = torch.linalg.svd(xc, full_matrices=False)
        comps = v[:k].T
        if k < 3:
            comps = torch.cat([comps, torch.zeros(x.shape[1], 3 - k, device=x.device)], dim=1)
        # fix each component's sign so colours do not flip between runs
        proj = xc @ comps
        signs = torch.sign(proj.mean(0) + 1e-12)
        comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
        proj = xc @ comps
        lo = torch.quantile(proj, COLOR_PERCENTILES[0], dim=0)
        hi = torch.quantile(proj, COLOR_PERCENTILES[1], dim=0)
        return cls(mean, comps, lo, hi)

    def __call__(self, feature_map: torch.Tensor) -> torch.Tensor:
        """[D, H, W] feature map -> [3, H, W] RGB in [0, 1]."""
        D, H, W = feature_map.shape
        x = feature_map.detach().float().reshape(D, -1).T - self.mean.to(feature_map.device)
        rgb = (x @ self.components.to(x.device) - self.lo.to(x.device)) / (self.hi - self.lo).clamp_min(1e-8).to(x.device)
        return rgb.clamp(0, 1).T.reshape(3, H, W)
