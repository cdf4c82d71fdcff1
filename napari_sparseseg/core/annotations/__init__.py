"""Annotation rules: the label and weight conventions, boxes and clicks, fill between slices, held-out strokes, where to paint next."""
