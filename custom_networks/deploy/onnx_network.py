"""An ONNX model run by onnxruntime, wrapped as a torch module so MONAI inferers and evaluators can use it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

__all__ = ["OnnxRuntimeNetwork"]

# what onnxruntime raises for an unreadable or invalid model file (none derives from a common error class)
_LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoSuchFile,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)


class OnnxRuntimeNetwork(torch.nn.Module):
    """
    Runs an ONNX model (fp32 or int8) with onnxruntime behind the ``torch.nn.Module`` interface.

    Drop-in ``network`` for MONAI's ``SlidingWindowInferer``, ``SliceInferer`` and ``SupervisedEvaluator`` in a
    bundle config, so the ONNX path shares preprocessing, inferer and postprocessing with the torch path::

        "network": {
            "_target_": "custom_networks.deploy.onnx_network.OnnxRuntimeNetwork",
            "model_path": "$@bundle_root + '/models/model_int8_static.onnx'"
        }

    The module has no parameters; ``.to(device)``, ``.eval()`` and ``.train()`` change nothing in the model.
    onnxruntime computes on the CPU: inputs are copied to the host as float32 and the output is returned on
    the input's device. No autograd graph is recorded through it.

    Args:
        model_path: the ``.onnx`` file, with one input (B, C, *S) and the prediction as first output.
        num_threads: intra-op threads of the onnxruntime session. Defaults to 2.
        providers: onnxruntime execution providers, in order of preference. Defaults to the CPU provider.

    Raises:
        FileNotFoundError: if ``model_path`` does not exist.
        ValueError: if onnxruntime cannot load the file (the message is one line naming the file).

    Shapes: ``(B, C, *S) -> (B, out_channels, *S)`` for a segmentation model exported with dynamic axes.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        num_threads: int = 2,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        super().__init__()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"ONNX model file not found: {self.model_path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=list(providers))
        except _LOAD_ERRORS as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"cannot load ONNX model {self.model_path}: {reason}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        pred = self.session.run([self.output_name], {self.input_name: image})[0]
        return torch.from_numpy(pred).to(x.device)

    def extra_repr(self) -> str:
        return f"model_path={str(self.model_path)!r}, providers={self.session.get_providers()}"
