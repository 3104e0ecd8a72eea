"""
Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr) with the COCO caption tools, pycocoevalcap 1.2,
and the DCASE-2024 additions (SPIDEr-FL, FENSE, Vocab, SPIDEr-max).

The implementation is the `evaluate` metric module `metrics/paircap_caption_metrics/paircap_caption_metrics.py`,
which must stand alone on the Hub; this module loads that file by path and re-exports it, so the scoring logic exists
once. A checkout has it under `metrics/`, a wheel ships the same folder as `paircap/_metric_module/`. Needs the `eval`
extra (`pip install "paircap[eval]"`) and a Java runtime.
"""

import importlib
import sys
import types
from pathlib import Path

_FILE_NAME = "paircap_caption_metrics.py"
_LOCATIONS = (
    Path(__file__).resolve().parent / "_metric_module" / _FILE_NAME,  # installed from a wheel
    Path(__file__).resolve().parents[1] / "metrics" / "paircap_caption_metrics" / _FILE_NAME,  # a checkout
)
MODULE_FILE = next((path for path in _LOCATIONS if path.is_file()), _LOCATIONS[-1])
_PACKAGE_NAME = "paircap._caption_metrics_package"
_MODULE_NAME = f"{_PACKAGE_NAME}.paircap_caption_metrics"


def _load_module():
    """The metric module, imported as part of a package over its folder (it imports `.paircap_fense` beside it)."""
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    if not MODULE_FILE.is_file():
        places = " nor ".join(map(str, _LOCATIONS))
        raise ImportError(
            f"paircap.metrics needs the metric module {_FILE_NAME}, found at neither {places}: reinstall paircap "
            '(`pip install "paircap[eval]"`), or use `evaluate.load` on the published metric.'
        )
    package = types.ModuleType(_PACKAGE_NAME)
    package.__path__ = [str(MODULE_FILE.parent)]
    sys.modules[_PACKAGE_NAME] = package
    try:
        return importlib.import_module(_MODULE_NAME)
    except BaseException:
        for name in [name for name in sys.modules if name.startswith(_PACKAGE_NAME)]:
            del sys.modules[name]
        raise


_module = _load_module()
fense_module = sys.modules[f"{_PACKAGE_NAME}.paircap_fense"]  # FENSE's weight lookup and cache folder

ALL_METRICS = _module.ALL_METRICS
DCASE2024_METRICS = _module.DCASE2024_METRICS
SPICE_JARS_ENV = _module.SPICE_JARS_ENV
CaptionScores = _module.CaptionScores
JavaNotFoundError = _module.JavaNotFoundError
close_java_processes = _module.close_java_processes
compute_caption_metrics = _module.compute_caption_metrics
find_java = _module.find_java
ptb_tokenize = _module.ptb_tokenize
spice_jars_missing = _module.spice_jars_missing

# pickle (e.g. scores or errors sent between processes) finds these classes here
for _cls in (CaptionScores, JavaNotFoundError):
    _cls.__module__ = __name__

__all__ = [
    "ALL_METRICS",
    "DCASE2024_METRICS",
    "SPICE_JARS_ENV",
    "CaptionScores",
    "JavaNotFoundError",
    "close_java_processes",
    "compute_caption_metrics",
    "fense_module",
    "find_java",
    "ptb_tokenize",
    "spice_jars_missing",
]
