"""Analysis of finished runs: figures and tables (plots), the synthetic mechanism diagnostics
(mechanism), the notebook CAM explorer (explorer) and its screenshot in JupyterLab
(explorer_browser), one image through the network (walkthrough), one training step taken apart
(training), the pretraining set's pictures (pretraining), the notebooks' set-up and executed
copies (notebook). Reads what the stages wrote; no stage imports it."""
