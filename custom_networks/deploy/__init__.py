"""Deployment: ONNX export, onnxruntime int8 quantization, an onnxruntime-backed network for MONAI inferers, and
the export of a trained bundle. Import the module you need; onnx and onnxruntime load only then."""

__all__ = ["bundle_export", "onnx_export", "onnx_network", "quantize"]
