"""Media in and out: video decoding and sampling (:mod:`.video`), output folders (masks, overlays, JSON
lines: :mod:`.outputs`) and COCO RLE (:mod:`.rle`). PyAV is needed only by video and overlays."""
