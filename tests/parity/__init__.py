"""Parity tests: runtime or export vs an independent reference (segment-anything, torch, librosa, pycocotools)."""
