"""SAM on the runtime's sessions: preprocessing, encoder batches and the prompt decoder
(:mod:`.predictor`, segment-anything's ``SamPredictor`` path) and the automatic mask generator
(:mod:`.amg`, its ``SamAutomaticMaskGenerator``)."""
