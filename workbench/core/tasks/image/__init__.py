"""Image classification: the task (classification.py), its non-Hugging-Face models (models.py), the defaults
chosen from the data (policy.py), transforms, the frozen-feature cache and
baseline, and the export's model card (card.py). Importing this package imports nothing heavy."""
