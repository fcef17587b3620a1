"""The command line, experiment specs, MLflow tracking, reports and plots."""
