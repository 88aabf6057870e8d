"""Preprocessing in numpy: audio (WAV reading, mono, resampling, 1-s chunks per frame), frames (decoding,
CLIP transforms) and PyTorch-exact resizes. The one implementation that the runtime, the export's parity
checks and AC-FPN training (models/) all feed the networks with."""
