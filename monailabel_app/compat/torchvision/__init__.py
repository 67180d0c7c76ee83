"""Stand-in for ``torchvision`` in the MONAI Label environment, on the server's PYTHONPATH only.

monailabel 0.8.5 imports ``torchvision.utils`` when its post transforms and DeepEdit handlers load. PyPI has
only CUDA builds of torchvision for torch 2.13, and with the CPU torch their C extension does not load
(``operator torchvision::nms does not exist``), so importing the real package fails. Nothing this app serves
calls torchvision; the two names monailabel imports raise if anything does.
"""

from __future__ import annotations

__all__: list[str] = []
__version__ = "0.0.0+monailabel-app-stand-in"
