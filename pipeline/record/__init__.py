"""The record part: a run directory with report.json written candidate by candidate (`report`), one report
entry per candidate (`candidate`), and the PNG text chunks every image carries (`pnginfo`).

May import: pipeline.errors, pipeline.images. The search writes here; nothing here knows the search.
"""
from .. import lazy_exports

_EXPORTS = {"RunRecord": ".report", "REPORT_NAME": ".report", "SCHEMA_VERSION": ".report",
            "Candidate": ".candidate", "read_png_text": ".pnginfo"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
