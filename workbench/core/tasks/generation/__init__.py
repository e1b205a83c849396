"""Generative fine-tuning (task ``text-generation``): supervised fine-tuning of a causal language model."""
