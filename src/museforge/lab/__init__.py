"""The lab: workflows that tie data, models, generation and metrics together (shipping models, keeping them
learning)."""
