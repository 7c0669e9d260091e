"""Analysis of finished runs: figures and tables (plots), the synthetic mechanism diagnostics
(mechanism) and the notebook CAM explorer (explorer). Reads what the stages wrote; no stage
imports it."""
