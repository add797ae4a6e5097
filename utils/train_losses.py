"""The training objective, assembled from the enabled terms.

* colour: (1 - lambda_dssim) * L1 + lambda_dssim * (1 - SSIM), masked by tool masks;
* depth: lambda_depth * masked L1 on depth (EndoNeRF);
* inverse depth (``-d``, graphdeco's depth regularisation): weight(iteration) * L1 between the
  rendered inverse depth (composited 1/z, not alpha-normalised) and the view's monocular
  inverse-depth map, on views whose map is reliable (scene.invdepth); the weight decays
  log-linearly from --depth_l1_weight_init to --depth_l1_weight_final over --iterations;
* perceptual: lambda_perceptual * loss(DINO(render), stored DINO(ground truth)) every
  ``perceptual_every`` iterations, at feature resolution, tool masks respected;
* feature distillation: lambda_feature * loss(rendered per-Gaussian features, stored DINO
  map resized to the render), through the PCA or a learned 1x1 decoder.
A disabled term builds nothing and draws no random numbers, so turning it off is
bit-identical to never having had it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from scene.adam import Adam
from scene.optim_utils import exponential_lr
from utils.feature_distill import FeatureDecoder, choose_mode, decoder_path, feature_loss, teacher_at
from utils.loss_utils import depth_l1_loss, l1_dssim_loss, l1_loss
from utils.perceptual import mask_to_feature_res, perceptual_loss


class TrainingLosses:
    """Callable ``(iteration, camera, render_pkg, gaussians) -> (loss, {term: value})``."""

    def __init__(self, dataset, opt, scene, device):
        self.opt = opt
        self.device = device
        self.store = None
        self.decoder = None
        self.decoder_opt = None
        self.distill_mode = None
        # render() composites 1/z only when this is on (both weights are > 0, or both 0: arguments checks it)
        self.invdepth = bool(dataset.depths) and opt.depth_l1_weight_init > 0
        use_perceptual = opt.lambda_perceptual > 0
        use_distill = opt.lambda_feature > 0 and dataset.feature_dim > 0
        # flag combinations are validated when parsing (arguments.OptimizationParams.check)
        if use_perceptual or use_distill:
            from utils.feature_store import open_feature_store

            self.store = open_feature_store(opt.dino_feature_dir, weights=opt.dino_weights or None,
                                            random_init=opt.dino_random_init or None, device=device)
        if use_distill:
            pca = self.store.meta.get("pca")
            pca_dim = self.store.channels if pca else None
            self.distill_mode = choose_mode(dataset.feature_decoder, dataset.feature_dim, self.store.channels, pca_dim, self.store.meta_path)
            if self.distill_mode == "decoder":
                gen_state = torch.get_rng_state()
                torch.manual_seed(dataset.seed)
                self.decoder = FeatureDecoder(dataset.feature_dim, self.store.channels).to(device)
                torch.set_rng_state(gen_state)
                self.decoder_opt = Adam(self.decoder.parameters(), lr=opt.decoder_lr)

    def color_loss(self, image: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return l1_dssim_loss(image, gt, mask, self.opt.lambda_dssim)

    def invdepth_weight(self, iteration: int) -> float:
        """graphdeco's schedule of the inverse-depth term (its get_expon_lr_func over --iterations)."""
        o = self.opt
        return exponential_lr(iteration, o.depth_l1_weight_init, o.depth_l1_weight_final, o.iterations)

    def perceptual(self, cam, image: torch.Tensor) -> torch.Tensor:
        target = self.store.get(cam.image_name, cam.original_image)
        pred = self.store.compute(image[None])[0]
        mask = None if cam.mask is None else mask_to_feature_res(cam.mask, tuple(target.shape[-2:]))
        return perceptual_loss(pred, target, self.opt.perceptual_loss, mask)

    def distill(self, cam, fmap: torch.Tensor) -> torch.Tensor:
        stored = self.store.get(cam.image_name, cam.original_image)
        size = tuple(fmap.shape[-2:])
        if self.distill_mode == "pca":
            target, pred = teacher_at(stored, size, fmap.shape[0]), fmap
        else:
            target, pred = teacher_at(stored, size), self.decoder(fmap)
        return feature_loss(pred, target, self.opt.feature_loss, cam.mask)

    def __call__(self, iteration: int, cam, pkg: dict, gaussians) -> tuple[torch.Tensor, dict]:
        o = self.opt
        terms = {"color": self.color_loss(pkg["render"], cam.original_image, cam.mask)}
        loss = terms["color"]
        if o.lambda_depth > 0 and cam.depth is not None:
            terms["depth"] = depth_l1_loss(pkg["depth"], cam.depth, cam.mask)
            loss = loss + o.lambda_depth * terms["depth"]
        w_invdepth = self.invdepth_weight(iteration) if self.invdepth and cam.invdepth is not None else 0.0
        if w_invdepth > 0:
            terms["invdepth"] = l1_loss(pkg["invdepth"], cam.invdepth, cam.mask)
            loss = loss + w_invdepth * terms["invdepth"]
        if o.lambda_perceptual > 0 and iteration % o.perceptual_every == 0:
            terms["perceptual"] = self.perceptual(cam, pkg["render"])
            loss = loss + o.lambda_perceptual * terms["perceptual"]
        if self.distill_mode is not None and pkg["feature_map"] is not None:
            terms["feature"] = self.distill(cam, pkg["feature_map"])
            loss = loss + o.lambda_feature * terms["feature"]
        return loss, terms

    def step(self) -> None:
        """Called after the Gaussians' optimizer step."""
        if self.decoder_opt is not None:
            self.decoder_opt.step()
            self.decoder_opt.zero_grad(set_to_none=True)

    def state(self) -> dict:
        if self.decoder is None:
            return {}
        return {"decoder": self.decoder.state_dict(), "decoder_opt": self.decoder_opt.state_dict()}

    def load_state(self, state: dict) -> None:
        if self.decoder is not None and "decoder" in state:
            self.decoder.load_state_dict(state["decoder"])
            self.decoder_opt.load_state_dict(state["decoder_opt"])

    def save(self, model_path: Path, iteration: int) -> None:
        """Save the feature decoder (if any) beside the iteration's PLY."""
        if self.decoder is not None:
            self.decoder.save(decoder_path(model_path, iteration))
