"""Serving tests: a real tritonserver, the wire contract, the client, the generated model repository and k8s."""
