"""Inference: streamed sliding-window prediction, forest fusion, CRF refinement, post-processing with the strokes."""
