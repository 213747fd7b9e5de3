"""The feature-bank side: the bank format (``bank``), the official-cache importer (``official``), open_clip
extraction (``extract``), the real-offline recipe (``real_offline`` with ``debian``, ``decode``, ``towers``)
and the ``python -m bench.features`` command (``__main__``)."""
