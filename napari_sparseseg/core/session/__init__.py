"""One annotation session: its state (image, strokes, model, history) and its rounds (train, predict, suggest)."""
