"""Research programs built on the library; nothing in the library imports them.

Each runs as ``python -m rexnet_deploy.experiments.<name>`` (``compression_table``, ``quant_benchmark``),
keeps its runs as content-keyed stages under ``runs/`` and writes its tables under ``runs/`` unless
``--out`` names a folder of the tracked ``bench/results/`` on purpose.
"""
