"""MONAI Label app serving this project's bundles (docs/monailabel.md).

Runs in the separate MONAI Label environment (``scripts/setup_monailabel.sh``), not the main one: monailabel
0.8.5 needs numpy 1 and pydicom 2.
"""
