"""Serving the runtime with NVIDIA Triton Inference Server.

``wire``: the KServe v2 contract of the pipeline model ``avs``; ``triton_model``: that model (python
backend); ``repo``: writes it into a model repository; ``tritonenv``: the served model's own environment
(numpy<2) with the nvidia-pytriton wheel's ``tritonserver``; ``server``: starts/stops that server.
Nothing here imports tritonclient at import time (see ``runtime.serving.client``).
"""
