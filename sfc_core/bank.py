"""The image bank of image-bank re-sampling (IBR, docs/reference.md 3.2), on the training device.

One slot per class holds the most recent training image that contained the class: its
augmented crop, crop box and label. Each step the loader batch is written in (after a random
shuffle of the write order, so the image written last wins a slot, as the reference), then
``k`` slots are drawn uniformly with replacement and appended to the batch.

    bank = ImageBank(num_classes, (3, S, S), device)
    bank.update(images, boxes, labels, generator)       # after every loader batch
    images_k, boxes_k, labels_k = bank.draw(k, generator)

Differences from the reference, on purpose:
- The images stay on the training device; a step writes the winning images with one
  indexed copy and gathers only the k drawn slots (the reference copies the whole bank
  between CPU and GPU every step). The small per-slot records (box, label, filled flag) live
  on the CPU, so deciding what to write or draw never waits for the GPU, and the indices
  reach the device in one non-blocking copy per call (``engine.to_device``).
- A slot stores the crop box (4 ints), not a (C+1, S, S) valid mask: the mask is rebuilt
  from box and label on the device.
- Quirk 19: draws are uniform over the *filled* slots only. The reference draws over all
  slots, so in its first steps it can append an all-zero image with an all-zero label.
- Under DDP every process keeps its own bank, filled from its own shard of the data.
"""
from __future__ import annotations

import torch

from sfc_core.engine import to_device
from sfc_core.errors import SfcError


class ImageBank:
    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], device: torch.device,
                 dtype: torch.dtype = torch.float32):
        self.images = torch.zeros((num_classes, *image_shape), dtype=dtype, device=device)
        self.boxes = torch.zeros((num_classes, 4), dtype=torch.int64)
        self.labels = torch.zeros((num_classes, num_classes), dtype=torch.float32)
        self.filled = torch.zeros(num_classes, dtype=torch.bool)

    def update(self, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
               generator: torch.Generator) -> None:
        """Write a batch: images (N, 3, S, S) on the bank's device; boxes (N, 4) and labels
        (N, C) on the CPU. For every class present, the slot gets the image containing it
        that comes last in a random order of the batch."""
        order = torch.randperm(len(labels), generator=generator)
        position = torch.empty_like(order)
        position[order] = torch.arange(1, len(order) + 1)                    # 1-based write order
        latest, winner = (labels.bool() * position[:, None]).max(dim=0)      # (C,), (C,)
        classes = latest.nonzero().squeeze(1)
        if len(classes) == 0:
            return
        winner = winner[classes]
        slots, rows = to_device(torch.stack([classes, winner]), self.images.device)     # one copy
        self.images[slots] = images[rows].to(self.images.dtype)
        self.boxes[classes] = boxes[winner]
        self.labels[classes] = labels[winner].float()
        self.filled[classes] = True

    def draw(self, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k slots uniformly with replacement among the filled ones: images (k, 3, S, S) on the
        bank's device, boxes (k, 4) and labels (k, C) on the CPU."""
        filled = self.filled.nonzero().squeeze(1)
        if len(filled) == 0:
            raise SfcError("the image bank is empty: no training image has a class label",
                           fix="check the image-level labels of the train list")
        slots = filled[torch.randint(len(filled), (k,), generator=generator)]
        return self.images[to_device(slots, self.images.device)], self.boxes[slots], self.labels[slots]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"images": self.images.cpu(), "boxes": self.boxes.clone(),
                "labels": self.labels.clone(), "filled": self.filled.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["images"].shape != self.images.shape:
            raise SfcError(f"saved image bank has shape {tuple(state['images'].shape)}, this run "
                           f"needs {tuple(self.images.shape)}",
                           fix="resume with the configuration the run was started with")
        self.images.copy_(state["images"])
        self.boxes.copy_(state["boxes"])
        self.labels.copy_(state["labels"])
        self.filled.copy_(state["filled"])
