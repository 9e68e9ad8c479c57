"""Report pages: the compile report, the calibration page and the farm page, each one
self-contained HTML drawn with the small kit in :mod:`edgecompress.report.kit`."""
