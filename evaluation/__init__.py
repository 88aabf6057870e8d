"""AVSBench evaluation (``avs eval``): the paper's metrics on S4 / MS3, in-process or against a server.

Rooms: ``metrics`` (the AVSBench mIoU / F-score, numpy only: a leaf that ``models/train_acfpn.py`` may
import), ``paper`` (the paper's figures), ``predictors`` (what turns one video into the metric's input:
an in-process :class:`runtime.Pipeline`, a served pipeline, the full-mask baseline), ``split`` (the one
loop over a split), ``summary`` (the one summary writer: JSON and Markdown), ``run`` (``evaluate`` and
``evaluate_served``) and ``cli`` (``avs eval`` / ``python -m evaluation``).

Importing this package imports nothing, so ``evaluation.metrics`` stays a leaf.
"""
