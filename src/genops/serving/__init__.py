"""Serving exported graphs with ONNX Runtime."""
