"""npe2 adapters and layer <-> core conversion. Imports napari lazily, never Qt."""
