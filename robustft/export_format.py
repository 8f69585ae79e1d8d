"""The folder format of ``robustft export`` (docs/export.md): its file names and the format of its ``config.json``.

Written once here, for the exporter (robustft/export.py) and for the file zoo that loads such a folder back
(plugins/robustft_plugins/zoos/file_zoo.py, through :mod:`robustft.plugin`).
"""

from __future__ import annotations

#: The weights, as safetensors (the state dict of the network, which takes inputs in [0, 1]).
EXPORT_WEIGHTS = "model.safetensors"
#: The architecture, its options, the classes, the input size and normalisation, the provenance and the results.
EXPORT_CONFIG = "config.json"
#: The model card.
EXPORT_README = "README.md"
#: ``config.json``'s ``"format"`` and ``"format_version"``: a reader refuses another format or a newer version.
EXPORT_FORMAT, EXPORT_FORMAT_VERSION = "robustft-export", 1
