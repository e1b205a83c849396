"""What a run's results mean: label issues, calibration, explanations, run comparison, frozen-backbone
embeddings."""
