"""Stage 2: propensity, noise rates and the CausalRM reward head on cached embeddings.

Entry points (imported from their modules so that ``rmpipe --help`` stays fast):
``stages.fit.run.fit(params, backbone, methods=None, *, dataset=None, progress=True)``,
``rmpipe.score.score(params, head_dir, data, out=None, *, progress=True)``; on arrays,
``stages.fit.core.fit_arrays(FitInputs(...), params.fit, [METHODS[name], ...])``; heads load with
``pipeline.heads.load_head(folder)``.
"""
