"""Evaluation against clean labels (the only place that reads them), metrics and plots."""
