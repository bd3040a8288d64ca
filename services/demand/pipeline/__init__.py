"""The aggregated pipeline: fine cells kept incrementally, snapshots, and disclosure-controlled views.

Each demand line in the pipeline (status planned or tendering) counts in one fine
cell: its anchor, whether it is aggregate-only, and its *atom*, the most detailed
key a view can ask for (anchor type, CPV group of its main code, quarters of the
expected tender date and of the contract start, value band, VCSE and SME
suitability, delivery area). ``pipeline_cells`` holds the sums per fine cell and is
changed in the same transaction as the lines; a view is a GROUP BY over those rows.

The release job copies the live sums of the changed public cells to the ``released_``
columns at every run, and on its cadence moves each changed confidential block (CPV
division x tender quarter) to its live state where the static and change rules allow
(see :mod:`services.demand.disclosure`); views read only released figures, and only
views holding whole blocks include the confidential part.

- :mod:`.cells`: where a line counts, and the arithmetic of cells and blocks (no I/O);
- :mod:`.storage`: the writes of the pipeline tables and the release's queries, and its lock;
- :mod:`.release`: the release job (public cells, confidential blocks, record, announce);
- :mod:`.view_queries`: reading a view of the released figures, and what releases changed in it;
- :mod:`.views`: one view as answered: computed, or the last answer for an earlier snapshot
  moved by the changes each release since recorded (``pipeline_changes``), so that a client
  polling a view gets each new snapshot without a pass over the whole pipeline.
"""
