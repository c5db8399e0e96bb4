"""Analysis: learning-curve fitting and forecasting, timing of training iterations, precision ablation.

metrics_io (read metrics.json), curves (models, fits, held-out selection, bootstrap intervals), forecast
(run-level forecast + lr-drop warnings), plots (PNGs), timing (shared by tools.benchmark and the ablation),
ablation (one fresh process per cell). Tools: tools/{forecast_curve,plot_metrics,benchmark,ablate_precision}.py.
"""
