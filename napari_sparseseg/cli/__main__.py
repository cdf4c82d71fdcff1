"""``python -m napari_sparseseg.cli``: the ``sparseseg`` command."""

import sys

from napari_sparseseg.cli import main

sys.exit(main())
