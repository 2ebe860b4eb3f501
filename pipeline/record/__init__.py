"""The record part: a run directory with report.json written candidate by candidate (`report`), one report
entry per candidate (`candidate`), the PNG text chunks every image carries (`pnginfo`), the self-contained
report.html rewritten with it (`page`, drawing with `page_svg`, styled by `page_assets`) and the list of runs
under a folder (`run_index`). Changes between rewrites of report.json are appended to report.journal
(`journal`; `load_report` reads both). Every file of the record is written through `storage` (a temporary copy renamed
into place), which also turns a full or read-only disk into a message that says how to resume.

May import: pipeline.errors, pipeline.images. The search writes here; nothing here knows the search.
"""
from .. import lazy_exports

_EXPORTS = {"RunRecord": ".report", "REPORT_NAME": ".report", "SCHEMA_VERSION": ".report",
            "Candidate": ".candidate", "read_png_text": ".pnginfo", "load_report": ".journal"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
