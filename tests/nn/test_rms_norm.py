import pytest
import torch
import torch.nn.functional as F

from genie.nn.rms_norm import rms_norm


def _reference(x, w, eps=1e-6):
    return F.rms_norm(x, (x.shape[-1],), eps=eps) * w


@pytest.mark.parametrize("weight_shape", [(2, 1, 1, 8), (2, 3, 4, 8)])
def test_gradients_match_finite_differences(weight_shape):
    # A weight per q/k, broadcast as attention has it, and one as large as x (nothing summed).
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(weight_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rms_norm, (x, w, 1e-6))


def test_matches_torch_rms_norm_forward_and_backward():
    x = torch.randn(2, 5, 7, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 1, 16, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 7, 16, dtype=torch.float64)
    ours = rms_norm(x, w)
    theirs = _reference(x, w)
    torch.testing.assert_close(ours, theirs)
    ours_grads = torch.autograd.grad(ours, (x, w), g)
    for a, b in zip(ours_grads, torch.autograd.grad(theirs, (x, w), g), strict=True):
        torch.testing.assert_close(a, b)


def test_low_precision_input_is_as_accurate_as_torch():
    x = torch.randn(2, 64, 4, 64, 16) * 30  # large values: squares summed in bf16 would be off
    w = 1 + 0.1 * torch.randn(2, 1, 1, 1, 16)
    g = torch.randn_like(x)
    exact = [t.double().requires_grad_() for t in (x, w)]
    truth = (_reference(*exact), *torch.autograd.grad(_reference(*exact), exact, g.double()))
    for fn in (rms_norm, _reference):
        xb, wb = (t.bfloat16().requires_grad_() for t in (x, w))
        out = fn(xb, wb)
        got = (out, *torch.autograd.grad(out, (xb, wb), g.bfloat16()))
        errors = [((a.double() - b).norm() / b.norm()).item()
                  for a, b in zip(got, truth, strict=True)]
        assert max(errors) < 0.01, (fn, errors)
