"""Export side: PyTorch models -> ONNX graphs (-> TensorRT plans) in a bundle, each with a parity check."""
