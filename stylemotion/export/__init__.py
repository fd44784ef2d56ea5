"""ONNX export of the networks, each described once by an ExportSpec, and verified with ONNX Runtime."""
