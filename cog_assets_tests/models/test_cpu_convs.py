"""The VAE's 3-D convolutions run through oneDNN on the CPU, with diffusers' moments."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from cog_assets.core.profiles import get_profile
from cog_assets.models.cpu_convs import route_convs_to_onednn
from cog_assets.models.vae import load_vae
from cog_assets.models.weights import WeightsSource

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                reason="this PyTorch build has no oneDNN")


def _encode(vae, x) -> tuple[torch.Tensor, set[str]]:
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        moments = vae._encode(x)
    return moments, {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("profile_name", ["tiny", "tiny-1.5"])
def test_narrow_layers_run_on_onednn_with_diffusers_moments(profile_name):
    """At 240x368 the tiny VAE's 8-channel layers fall under PyTorch's oneDNN heuristic and run
    slow_conv3d by default (5.5x slower: bench_vae_step.py); ours run none of it and give the
    moments of diffusers' default path to 1e-4 of their range (float sums reordered)."""
    source = WeightsSource(get_profile(profile_name))
    x = torch.rand(1, 3, 9, 240, 368, generator=torch.Generator().manual_seed(0)) * 2 - 1
    default, default_ops = _encode(load_vae(source, CPU, torch.float32, onednn_convs=False), x)
    ours, our_ops = _encode(load_vae(source, CPU, torch.float32), x)

    assert "aten::slow_conv3d_forward" in default_ops  # what the route is for
    assert "aten::slow_conv3d_forward" not in our_ops
    assert ours.shape == default.shape
    spread = default.max() - default.min()
    assert (ours - default).abs().max() <= 1e-4 * spread, (ours - default).abs().max() / spread


def test_other_devices_and_dtypes_take_the_default_way():
    """The route is per instance and per call: a bf16 call (or a model moved off the CPU)
    goes PyTorch's way, so a VAE converted after loading still computes what it should."""
    source = WeightsSource(get_profile("tiny"))
    vae = load_vae(source, CPU, torch.float32).to(torch.bfloat16)
    plain = load_vae(source, CPU, torch.float32, onednn_convs=False).to(torch.bfloat16)
    x = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(vae._encode(x.bfloat16()), plain._encode(x.bfloat16()))


def test_only_zero_padded_conv3d_is_routed():
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1),
                                torch.nn.Conv3d(4, 4, 3, padding=1, padding_mode="replicate"),
                                torch.nn.Conv2d(4, 4, 3))
    assert route_convs_to_onednn(model) == 1
    assert "_conv_forward" in vars(model[0]) and "_conv_forward" not in vars(model[1])
    assert type(model[0]) is torch.nn.Conv3d  # the class itself is untouched
