"""The human feedback loop: a labeling app (``rlxf serve``), its SQL store, work distribution
and export of answers as the records learners read (``rlxf feedback export``)."""
