"""scene/adam.py: torch's Adam update bit for bit, torch.optim.Adam's state-dict format both ways,
bad optimizer state named, and no torch._dynamo import (the reason the class exists)."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from scene.adam import Adam, fused_kernel_available
from scene.optim_utils import append_params, make_adam, prune_params

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5


def _groups(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = {"xyz": (40, 3), "f_rest": (40, 15, 3), "opacity": (40, 1)}
    params = {k: nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for k, s in shapes.items()}
    lrs = {"xyz": 1.6e-4, "f_rest": 2.5e-3 / 20, "opacity": 0.05}
    return params, [{"params": [p], "lr": lrs[k], "name": k} for k, p in params.items()]


def _grads(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    return {k: torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in params.items()}


def _run(opt, params, steps, skip=None):
    for step in steps:
        for k, g in _grads(params, step).items():
            params[k].grad = None if (skip == k and step == 2) else g
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fused", [True, False])
def test_values_equal_torch_adam_bit_for_bit(dtype, fused):
    mine, mine_groups = _groups(dtype)
    ref, ref_groups = _groups(dtype)
    fused_here = fused and fused_kernel_available("cpu", dtype)
    opt = Adam(mine_groups, lr=0.0, eps=1e-15, fused=fused)
    torch_opt = torch.optim.Adam(ref_groups, lr=0.0, eps=1e-15, fused=fused_here or None)
    _run(opt, mine, range(STEPS), skip="opacity")  # opacity has no gradient at step 2: it does not move then
    _run(torch_opt, ref, range(STEPS), skip="opacity")
    for k in mine:
        assert torch.equal(mine[k].detach(), ref[k].detach()), k
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[mine[k]][key].cpu(), torch_opt.state[ref[k]][key].cpu()), (k, key)
    assert float(opt.state[mine["opacity"]]["step"]) == STEPS - 1


def test_a_module_s_parameters_as_one_group():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as from a file: torch.optim.Adam would share the tensors
    opt, ref = Adam(a.parameters(), lr=0.01), torch.optim.Adam(b.parameters(), lr=0.01)
    x = torch.randn(8, 4)
    for _ in range(3):
        for o, m in ((opt, a), (ref, b)):
            m(x).square().sum().backward()
            o.step()
            o.zero_grad()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("direction", ["torch_to_mine", "mine_to_torch"])
def test_state_dicts_load_both_ways_and_training_continues_identically(direction):
    first, first_groups = _groups()
    second, second_groups = _groups()
    make_torch = lambda g: torch.optim.Adam(g, lr=0.0, eps=1e-15, fused=fused_kernel_available("cpu", torch.float32) or None)
    make_mine = lambda g: make_adam(g, lr=0.0, eps=1e-15)
    a = (make_torch if direction == "torch_to_mine" else make_mine)(first_groups)
    _run(a, first, range(3))
    b = (make_mine if direction == "torch_to_mine" else make_torch)(second_groups)
    with torch.no_grad():
        for k in second:
            second[k].copy_(first[k])
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as from a file: torch.optim.Adam would share the tensors
    _run(a, first, range(3, 6))
    _run(b, second, range(3, 6))
    for k in first:
        assert torch.equal(first[k].detach(), second[k].detach()), k


def test_state_dict_round_trip_through_a_weights_only_file(tmp_path):
    params, groups = _groups()
    opt = make_adam(groups, lr=0.0, eps=1e-15)
    _run(opt, params, range(2))
    torch.save(opt.state_dict(), tmp_path / "opt.pth")
    again = make_adam(_groups()[1], lr=0.0, eps=1e-15)
    again.load_state_dict(torch.load(tmp_path / "opt.pth", weights_only=True))
    for p, q in zip((g["params"][0] for g in opt.param_groups), (g["params"][0] for g in again.param_groups)):
        assert torch.equal(opt.state[p]["exp_avg_sq"], again.state[q]["exp_avg_sq"])
        assert float(opt.state[p]["step"]) == float(again.state[q]["step"]) == 2


def _saved_after_one_step():
    params, groups = _groups()
    opt = make_adam(groups, lr=0.0, eps=1e-15)
    _run(opt, params, range(1))
    return opt.state_dict()


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.pop("state"), "not an Adam state dict"),
    (lambda s: s["param_groups"].pop(), "has 2 parameter groups, this model 3"),
    (lambda s: s["param_groups"][0].update(name="scaling"), "group 0 is 'scaling', this model's 'xyz'"),
    (lambda s: s["param_groups"][1]["params"].append(7), "group f_rest does not have this model's 1 parameters"),
    (lambda s: s["state"][2].update(exp_avg=torch.zeros(39, 1)), "group opacity: exp_avg has shape (39, 1)"),
    (lambda s: s["state"][0].pop("step"), "group xyz lacks step"),
    (lambda s: s["state"][0].update(step=torch.tensor(float("nan"))), "step nan is not a step count"),
    (lambda s: s["state"][0]["exp_avg"].fill_(float("inf")), "group xyz: exp_avg holds NaN or inf"),
    (lambda s: s["state"][1]["exp_avg_sq"].fill_(-1.0), "group f_rest: exp_avg_sq is negative"),
    (lambda s: s["param_groups"][0].update(amsgrad=True), "uses amsgrad=True"),
    (lambda s: s["param_groups"][0].update(betas=(0.9, 1.5)), "betas (0.9, 1.5) are not two numbers"),
    (lambda s: s["param_groups"][0].update(lr=-1.0), "lr -1.0 is not a non-negative number"),
])
def test_bad_optimizer_state_is_named(edit, needle):
    saved = _saved_after_one_step()
    edit(saved)
    opt = make_adam(_groups()[1], lr=0.0, eps=1e-15)
    with pytest.raises(ValueError, match=re.escape(needle)):
        opt.load_state_dict(saved)


def test_row_surgery_follows_the_parameters():
    params, groups = _groups()
    opt = make_adam(groups, lr=0.0, eps=1e-15)
    _run(opt, params, range(2))
    keep = torch.arange(40) % 3 != 0
    before = {k: opt.state[p]["exp_avg"].clone() for k, p in params.items()}
    params = prune_params(opt, params, keep)
    params = append_params(opt, params, {k: torch.zeros(2, *p.shape[1:]) for k, p in params.items()})
    for k, p in params.items():
        assert p.shape[0] == int(keep.sum()) + 2 and opt.state[p]["exp_avg"].shape == p.shape
        assert torch.equal(opt.state[p]["exp_avg"][:-2], before[k][keep]) and not opt.state[p]["exp_avg"][-2:].any()
    _run(opt, params, range(2, 3))  # the new rows step like the rest


def test_training_does_not_import_torch_dynamo(tmp_path):
    """torch.optim's first call imports torch._dynamo (1 s, ~180 MB resident); a training run must not."""
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import train
from scene.synthetic_blender import make_synthetic_blender
scene = make_synthetic_blender({str(tmp_path / 'scene')!r}, n_train=2, n_test=1, width=16, height=16, seed=0)
train.main(["-s", str(scene), "-m", {str(tmp_path / 'out')!r}, "--iterations", "3", "--checkpoint_iterations", "3",
            "--test_iterations", "-1", "--quiet", "--feature_dim", "2"])
print(sorted(m for m in sys.modules if m.startswith("torch._dynamo") or m == "sympy"))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
