"""The pipeline's side of the networks: build.py (SFC's network and objective from a configuration,
weight files and checkpoints), pretrained.py (the small pretrained backbone), deeplab_v2.py (step 3)."""
