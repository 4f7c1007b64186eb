"""Record one PyTorch training iteration as an accelsim trace (needs the optional `torch` extra).

`record_iteration(model, inputs, targets, loss_fn)` runs one forward and backward pass of
`model` (an ``nn.Module``: torchvision-style ResNets, VGG, MobileNet-v2, your own) and
records, for every ``nn.Conv2d`` and ``nn.Linear`` it calls, the four tensors of the trace
contract (`simulator.trace`, `traces/README.md`) and the layer's geometry:

- `weight`: the weight the forward pass used;
- `input`: the layer's input;
- `input_saved`: the activations kept for the weight gradient (the input itself, unless
  the module says otherwise, see below);
- `grad_output`: the gradient arriving at the layer's output (a full backward hook).

Layers are named by their qualified module names (``model.named_modules()``) and come in
the order the forward pass calls them. `recorded_trace(...)` wraps them in a `Trace`, and
`simulator.trace.write_trace` writes it (atomically); `accelsim run --trace DIR` simulates it.

What cannot be mapped is refused in one line (`TorchTraceError`), or skipped and named
with `skip_unsupported=True`: transposed, 1-d and 3-d convolutions, non-square kernels,
strides, paddings or dilations, string or non-zero padding modes, a ``Linear`` applied to
more than [N, C], and a layer called more than once in one forward pass.

**Sparsified copies.** A method like SWAT keeps sparse copies of W and X inside a custom
autograd function, which hooks cannot see. While the recorder runs, every layer has
``module.accelsim_recording = True``; such a module then sets ``module.accelsim_used =
{"weight": w_used, "input_saved": x_saved}`` in its forward pass (both optional; detached
tensors), and the recorder takes them instead of ``module.weight`` and the input. It
clears the attribute before each forward pass and removes both afterwards, so nothing
stale is read or kept. `workloads.torch_swat` does this for SWAT-U.

Not handled: under autocast the recorder sees ``module.weight`` (float32), not the
lower-precision copy the kernel used; a model wrapped in DataParallel or torch.compile
records with its wrapper's prefix in the names (``module.``, ``_orig_mod.``).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from simulator.trace import LayerSpec, Trace, TraceLayer

UNSUPPORTED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Conv1d, nn.Conv3d,
               nn.Bilinear)


class TorchTraceError(ValueError):
    """A model or layer the recorder cannot map; `str()` is one line."""


def _square(module: nn.Module, name: str, what: str) -> int:
    value = getattr(module, what)
    if isinstance(value, str):
        raise TorchTraceError(f"layer {name!r} ({type(module).__name__}): {what}={value!r}: accelsim "
                              "needs explicit integer padding")
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(set(values)) != 1:
        raise TorchTraceError(f"layer {name!r} ({type(module).__name__}): {what}={values}: accelsim "
                              "models square kernels, strides, paddings and dilations only")
    return int(values[0])


def layer_spec(name: str, module: nn.Module, input_shape: tuple) -> LayerSpec:
    """The `LayerSpec` of a Conv2d or Linear called on an input of `input_shape`."""
    if isinstance(module, nn.Linear):
        if len(input_shape) != 2:
            raise TorchTraceError(f"layer {name!r} (Linear): input of shape {tuple(input_shape)}: "
                                  "accelsim maps a Linear on [N, C] inputs only")
        return LayerSpec(name, "fc", module.in_features, module.out_features, bias=module.bias is not None)
    if module.padding_mode != "zeros":
        raise TorchTraceError(f"layer {name!r} (Conv2d): padding_mode={module.padding_mode!r}: "
                              "accelsim models zero padding only")
    k, s, p, d = (_square(module, name, w) for w in ("kernel_size", "stride", "padding", "dilation"))
    h, w = int(input_shape[2]), int(input_shape[3])
    out = [(v + 2 * p - d * (k - 1) - 1) // s + 1 for v in (h, w)]
    return LayerSpec(name, "conv", module.in_channels, module.out_channels, k, s, p, d, module.groups,
                     (h, w), (out[0], out[1]), module.bias is not None)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A copy as float32, or float64 for a float64 tensor (the trace formats' dtypes)."""
    t = t.detach()
    return (t if t.dtype == torch.float64 else t.to(torch.float32)).cpu().numpy().copy()


MAX_MAGNITUDE = 1e15  # what simulator.trace.read_trace accepts


class _Recorder:
    def __init__(self, model: nn.Module, skip_unsupported: bool):
        self.records: dict[str, dict] = {}
        self.order: list[str] = []
        self.skipped: list[str] = []
        self.handles = []
        self.layers = []
        for name, module in model.named_modules():
            name = name or type(module).__name__.lower()  # the model is itself one layer
            if isinstance(module, UNSUPPORTED):
                what = f"layer {name!r} ({type(module).__name__}): accelsim cannot map it"
                if not skip_unsupported:
                    raise TorchTraceError(f"{what}; pass skip_unsupported=True to record the other layers")
                self.skipped.append(what)
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                self.layers.append((name, module))

    def attach(self) -> None:
        """Hook every layer (`remove` undoes it all, also after a partial attach)."""
        for name, module in self.layers:
            module.accelsim_recording = True
            self.handles.append(module.register_forward_pre_hook(self._clear))
            self.handles.append(module.register_forward_hook(self._forward(name)))
            self.handles.append(module.register_full_backward_hook(self._backward(name)))

    @staticmethod
    def _clear(module, args):
        module.__dict__.pop("accelsim_used", None)  # nothing from an earlier forward pass

    def _forward(self, name: str):
        def hook(module, args, output):
            if name in self.records:
                raise TorchTraceError(f"layer {name!r} is called twice in one forward pass: accelsim "
                                      "needs one call per layer")
            (x,) = args[:1]
            if isinstance(module, nn.Conv2d) and x.dim() != 4:
                raise TorchTraceError(f"layer {name!r} (Conv2d): input of shape {tuple(x.shape)}: "
                                      "accelsim needs batched [N, C, H, W] inputs")
            used = getattr(module, "accelsim_used", None) or {}
            spec = layer_spec(name, module, tuple(x.shape))
            self.records[name] = {"spec": spec, "weight": _numpy(used.get("weight", module.weight)),
                                  "input": _numpy(x),
                                  "input_saved": _numpy(used["input_saved"]) if "input_saved" in used else None}
            self.order.append(name)
        return hook

    def _backward(self, name: str):
        def hook(module, grad_input, grad_output):
            self.records[name]["grad_output"] = _numpy(grad_output[0])
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        for _, module in self.layers:
            module.__dict__.pop("accelsim_recording", None)
            module.__dict__.pop("accelsim_used", None)


def _check_finite(name: str, tensor: str, values: np.ndarray) -> None:
    if values.size and not (np.isfinite(values).all() and np.abs(values).max() <= MAX_MAGNITUDE):
        raise TorchTraceError(f"layer {name!r}: {tensor} is not finite or exceeds {MAX_MAGNITUDE:g} "
                              "(a diverged iteration?): nothing recorded")


def record_iteration(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn,
                     skip_unsupported: bool = False) -> tuple[list[TraceLayer], torch.Tensor, list[str]]:
    """One training iteration of `model` (forward, `loss_fn(outputs, targets)`, backward;
    no optimizer step) with every Conv2d and Linear recorded. Returns (the `TraceLayer`s in
    call order, the loss, the unsupported layers skipped). Gradients are left in the
    parameters' `.grad`, as after any backward pass. The model must be in training mode;
    a non-finite tensor is refused (`TorchTraceError`), and no hook outlives the call."""
    if not model.training:
        raise TorchTraceError("the model is in evaluation mode: call model.train() to record a "
                              "training iteration")
    recorder = _Recorder(model, skip_unsupported)
    try:
        recorder.attach()
        with warnings.catch_warnings():  # the first layer's input (the image) needs no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed "
                                    "with respect to module outputs")
            loss = loss_fn(model(inputs), targets)
            loss.backward()
    finally:
        recorder.remove()
    layers = []
    for name in recorder.order:
        r = recorder.records[name]
        if "grad_output" not in r:
            raise TorchTraceError(f"layer {name!r} got no gradient (is it part of the loss?)")
        saved = r["input"] if r["input_saved"] is None else r["input_saved"]
        for tensor, values in (("weight", r["weight"]), ("input", r["input"]), ("input_saved", saved),
                               ("grad_output", r["grad_output"])):
            _check_finite(name, tensor, values)
        layers.append(TraceLayer(r["spec"], r["weight"], r["input"], saved, r["grad_output"]))
    if not layers:
        raise TorchTraceError("the model called no Conv2d or Linear layer: nothing to record")
    return layers, loss.detach(), recorder.skipped


def recorded_trace(layers: list[TraceLayer], network: str, method: str, sparsity: float,
                   meta: dict | None = None) -> Trace:
    """The recorded layers as a `Trace` (for `simulator.trace.write_trace`)."""
    return Trace(network=network, layers=layers, method=method, sparsity=float(sparsity),
                 meta={"recorded_with": f"torch {torch.__version__}", **(meta or {})})
