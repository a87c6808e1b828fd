"""Evaluation against clean labels (the only place that reads them), metrics and plots.

Entry point: ``stages.evaluate.run.evaluate(params, backbone, methods=None, *, dataset=None)``.
"""
