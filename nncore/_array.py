"""Small helpers shared by the modules that compute on an array namespace."""

from array_api_compat import array_namespace


def namespace(*arrays):
    """The array-API namespace of ``arrays`` (array-api-compat's wrapper for NumPy/CuPy)."""
    return array_namespace(*arrays)
