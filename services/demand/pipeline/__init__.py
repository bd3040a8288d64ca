"""The aggregated pipeline: fine cells kept incrementally, snapshots, and disclosure-controlled views.

Each demand line in the pipeline (status planned or tendering) counts in one fine
cell: its anchor, whether it is aggregate-only, and its *atom*, the most detailed
key a view can ask for (anchor type, CPV group of its main code, quarters of the
expected tender date and of the contract start, value band, VCSE and SME
suitability, delivery area). ``pipeline_cells`` holds the sums per fine cell and is
changed in the same transaction as the lines; a view is a GROUP BY over those rows.

A snapshot job copies the live sums to the ``released_`` columns, forms the
protection blocks (see :mod:`services.demand.disclosure`) over the released
aggregate-only atoms, and records a snapshot; views read only released figures,
so every view of one snapshot is protected by the same blocks.

- :mod:`.cells`: where a line counts, and the arithmetic of cells and blocks (no I/O);
- :mod:`.storage`: the queries and writes of the pipeline tables, and its lock;
- :mod:`.release`: the snapshot job (plan the blocks, release, record, announce);
- :mod:`.views`: one view of the released figures, disclosure control applied.
"""
