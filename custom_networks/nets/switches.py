from __future__ import annotations

from custom_networks.errors import InputError

__all__ = ["check_switches"]


def check_switches(network: str, **switches: object) -> None:
    """
    Raise an :class:`~custom_networks.errors.InputError` (a ``ValueError``) naming the first switch that is not a
    ``bool``.

    Bundle configs pass switches through as given, and ``python -m monai.bundle run --network_def#use_cbam false``
    gives the string ``"false"``, which Python reads as true: unchecked, the paper's form asked for on the command
    line would silently run the other one.

    Args:
        network: class name used in the message.
        switches: the switch values by parameter name.

    Example::

        >>> check_switches("CBAMUNet", use_cbam=True, residual_gates="false")
        Traceback (most recent call last):
        ...
        custom_networks.errors.InputError: CBAMUNet: residual_gates must be True or False, got the str 'false'.
    """
    for name, value in switches.items():
        if not isinstance(value, bool):
            raise InputError(
                f"{network}: {name} must be True or False, got the {type(value).__name__} {value!r}.", parameter=name
            )
