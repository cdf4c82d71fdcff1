"""The model: the MONAI network, its patch size, intensity normalisation, the random forest, the in-memory model (SegModel)."""
