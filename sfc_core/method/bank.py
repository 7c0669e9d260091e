"""Image-bank re-sampling (IBR, docs/reference.md 3.2): one slot per class on the training device.

A slot holds the latest training image containing the class (augmented crop, crop box, label):
each step writes the loader batch (shuffled write order: the image written last wins, as the
reference) and appends ``k`` slots drawn uniformly with replacement (``append_bank_draws``).
Unlike the reference: the images stay on the device (one indexed write, k-slot gathers; the
small records stay on the CPU so nothing waits for the GPU); a slot keeps the crop box, not the
valid mask; draws are over filled slots only (quirk 19: the reference can append an all-zero
image at first); under DDP every process keeps its own bank, filled from its own shard.
"""
from __future__ import annotations

import torch


class ImageBank:
    """``bank = ImageBank(num_classes, (3, S, S), device)``; ``bank.update(images, boxes,
    labels, generator)`` after every loader batch; ``images, boxes, labels = bank.draw(k, generator)``."""

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], device: torch.device,
                 dtype: torch.dtype = torch.float32):
        self.images = torch.zeros((num_classes, *image_shape), dtype=dtype, device=device)
        self.boxes = torch.zeros((num_classes, 4), dtype=torch.int64)
        self.labels = torch.zeros((num_classes, num_classes), dtype=torch.float32)
        self.filled = torch.zeros(num_classes, dtype=torch.bool)

    def update(self, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
               generator: torch.Generator) -> None:
        """Write a batch (images on the bank's device, boxes and labels on the CPU): each class present
        gets the image containing it that comes last in a random order of the batch."""
        order = torch.randperm(len(labels), generator=generator)
        position = torch.empty_like(order)
        position[order] = torch.arange(1, len(order) + 1)                    # 1-based write order
        latest, winner = (labels.bool() * position[:, None]).max(dim=0)      # (C,), (C,)
        classes = latest.nonzero().squeeze(1)
        if len(classes) == 0:
            return
        winner = winner[classes]
        slots, rows = _to_device(torch.stack([classes, winner]), self.images.device)     # one copy
        self.images[slots] = images[rows].to(self.images.dtype)
        self.boxes[classes] = boxes[winner]
        self.labels[classes] = labels[winner].float()
        self.filled[classes] = True

    def draw(self, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k filled slots, uniformly with replacement: images (k, 3, S, S), boxes (k, 4), labels (k, C)."""
        filled = self.filled.nonzero().squeeze(1)
        if len(filled) == 0:
            raise ValueError("the image bank is empty: no training image so far has a class label "
                             "(check the image-level labels of the train list)")
        slots = filled[torch.randint(len(filled), (k,), generator=generator)]
        return self.images[_to_device(slots, self.images.device)], self.boxes[slots], self.labels[slots]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"images": self.images.cpu(), "boxes": self.boxes.clone(),
                "labels": self.labels.clone(), "filled": self.filled.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["images"].shape != self.images.shape:
            raise ValueError(f"saved image bank has shape {tuple(state['images'].shape)}, this run "
                             f"needs {tuple(self.images.shape)}: resume with the run's configuration")
        self.images.copy_(state["images"])
        self.boxes.copy_(state["boxes"])
        self.labels.copy_(state["labels"])
        self.filled.copy_(state["filled"])


def append_bank_draws(bank: ImageBank | None, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                      draws: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Write a loader batch into the image bank, then append ``draws`` slots drawn from it:
    images (B, 3, S, S), boxes (B, 4), labels (B, C) -> B + draws rows (unchanged without a bank)."""
    if bank is None:
        return images, boxes, labels
    bank.update(images, boxes, labels, generator)
    drawn_images, drawn_boxes, drawn_labels = bank.draw(draws, generator)
    return torch.cat([images, drawn_images]), torch.cat([boxes, drawn_boxes]), torch.cat([labels, drawn_labels])


def _to_device(indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU ``indices`` on ``device`` without the host waiting: non-blocking, from pinned memory on CUDA."""
    if device.type == "cuda":
        indices = indices.pin_memory()
    return indices.to(device, non_blocking=True)
