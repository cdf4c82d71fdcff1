"""Training: the trainer on sparse strokes (masked weighted cross-entropy), its losses, self-supervised pretraining."""
