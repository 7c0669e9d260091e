"""The paper's method, importing torch, torchvision and numpy only (tests/test_layers.py checks):
network.py (SfcNet), backbones.py, cam.py (the CAM math), losses.py (the loss terms by name and
the objective), bank.py (image-bank re-sampling), coefficients.py (per-class loss weights),
fusion.py. The pipeline builds them from the configuration: sfc_core/model/build.py."""
