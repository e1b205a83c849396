"""Exports: the model folder (model.py), where it may go (target.py), its ONNX copy and check (onnx_export.py),
int8 afterwards (quantize.py) and a whole run as one portable file (pack.py)."""
