"""Exporting a trained program for other tools: the `predict` entry as ONNX (`onnx_model`).

Weights-only safetensors files are the runtime's (`Executor.save_weights`). This package
imports `tinyc.ir` and NumPy only, and `onnx` only when a model is built; the runtime never
imports it.
"""
