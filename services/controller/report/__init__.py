"""A run's report (``nasloop report``): its document, HTML, plots and statistics."""
