"""Analysis of finished runs: figures and tables (plots), the synthetic mechanism diagnostics
(mechanism), the notebook CAM explorer (explorer) and its screenshot in JupyterLab
(explorer_browser). Reads what the stages wrote; no stage imports it."""
