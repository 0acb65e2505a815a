"""`report.html`: the interactive Pareto page of a run (and static images).

- `write`: a run directory -> `RUN/report.html` (`write_report`);
- `data`: the data behind every part of the page, computed apart from the drawing;
- `page`: the drawing: Plotly figures and the self-contained page.
"""
