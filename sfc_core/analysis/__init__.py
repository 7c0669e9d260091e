"""Analysis of finished runs: figures and tables (plots), the synthetic mechanism diagnostics
(mechanism), the notebook CAM explorer (explorer) and its screenshot in JupyterLab
(explorer_browser), one image through the network step by step (walkthrough), the notebooks'
set-up and their executed copies (notebook). Reads what the stages wrote; no stage imports it."""
