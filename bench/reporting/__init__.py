"""Everything derived from run records — records, summary, tables, report, figures — torch-free.

``rebuild(stream_dir)`` (``python -m bench.rebuild``) regenerates a stream folder's derived files.
"""
