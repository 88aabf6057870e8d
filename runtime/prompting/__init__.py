"""Zero-shot prompting: the AudioCLIP audio-image heatmap (:mod:`.heatmap`) and what SAM is prompted with
from it (:mod:`.prompts`: points, boxes, the audio-guided automatic-mask grid)."""
