"""Evaluation: the simulated annotator and overlap metrics, for the demo, the benchmarks and the tests (never run on a user's strokes)."""
