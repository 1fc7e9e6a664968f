"""3-D convolutions on the CPU through oneDNN, whatever their width.

PyTorch picks oneDNN (mkldnn) for a float32 CPU convolution only when its heuristic for 2-D
convolutions says so: with one clip in the batch and no groups, the input's N·C·D·H must exceed
20480 (`ConvParams::use_mkldnn` in aten's Convolution.cpp). A narrow VAE layer at full
resolution (the tiny profile's 8 channels × 10 frames × 240 rows = 19200) falls short and runs
`slow_conv3d`, an im2col loop that took 88 % of a 49×240×368 encode and 5.5× the time oneDNN
takes for the same convolutions (bench/bench_vae_step.py). Real weights' wide layers already
pass the heuristic, so for them this changes nothing.

The moments differ from diffusers' default path only in the order of float sums, as compiled
or multi-threaded ones do (test_cpu_convs.py holds them to 1e-4 of the moments' range), so
they share keys with it (core/keys.py: how a moment is computed is not in its key).
"""

from __future__ import annotations

import types

import torch


def _onednn_conv_forward(self: torch.nn.Conv3d, x: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None) -> torch.Tensor:
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or torch.compiler.is_compiling()):  # the op has no fake kernel: inductor's own way
        return torch.nn.Conv3d._conv_forward(self, x, weight, bias)
    return torch.ops.aten.mkldnn_convolution(x, weight, bias, self.padding, self.stride,
                                             self.dilation, self.groups)


def route_convs_to_onednn(model: torch.nn.Module) -> int:
    """Make every zero-padded Conv3d of `model` run through oneDNN on float32 CPU tensors.

    Per instance (the class is untouched, other models keep PyTorch's choice); a call on
    another device or dtype, or one torch.compile traces (vae_compile), goes the default way,
    so a model moved later stays correct.
    Returns how many convolutions were routed (0 where this PyTorch has no oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return 0
    routed = 0
    for module in model.modules():
        if (isinstance(module, torch.nn.Conv3d) and module.padding_mode == "zeros"
                and isinstance(module.padding, tuple)):  # "same"/"valid" strings: default way
            module._conv_forward = types.MethodType(_onednn_conv_forward, module)
            routed += 1
    return routed
