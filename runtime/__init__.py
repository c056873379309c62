"""The runtime dispatcher: load an exported policy bundle and decide plans with numpy alone.

Imports neither torch, gymnasium nor stable-baselines3 (a test checks it in a fresh
interpreter). ``Dispatcher.load()`` opens the committed default bundle (resnet18);
``Dispatcher.load(model="digits_cnn")`` the other; ``Dispatcher.load(path)`` any bundle.
"""

from runtime.bundle import BUNDLE_FORMAT, QSPLIT_VERSION, Bundle, BundleError, load_bundle
from runtime.dispatcher import (
    FALLBACKS,
    PATHS,
    BatchItemError,
    Decision,
    Dispatcher,
    default_bundle_path,
)

__all__ = ["BUNDLE_FORMAT", "FALLBACKS", "PATHS", "QSPLIT_VERSION", "BatchItemError", "Bundle",
           "BundleError", "Decision", "Dispatcher", "default_bundle_path", "load_bundle"]
