"""Image bank semantics: the image written last wins a slot, draws come from filled slots
only, and the state round-trips exactly."""
from __future__ import annotations

import pytest
import torch

from sfc_core.method.bank import ImageBank

C = 4


def batch(labels: list[list[int]], offset: float = 0.0):
    """Images whose pixels all equal (offset + index), boxes (index, ...), labels multi-hot."""
    n = len(labels)
    images = (torch.arange(n, dtype=torch.float32) + offset)[:, None, None, None].expand(n, 3, 2, 2).clone()
    boxes = torch.arange(n)[:, None].repeat(1, 4)
    multi_hot = torch.zeros(n, C)
    for i, present in enumerate(labels):
        multi_hot[i, present] = 1
    return images, boxes, multi_hot


def test_last_image_in_the_shuffled_order_wins_each_slot():
    labels = [[0, 1], [1], [1, 2], [0]]
    images, boxes, multi_hot = batch(labels)
    for seed in range(6):
        bank = ImageBank(C, (3, 2, 2), torch.device("cpu"))
        bank.update(images, boxes, multi_hot, torch.Generator().manual_seed(seed))
        # the reference's loop over the shuffled batch: later images overwrite earlier ones
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
        expected = {}
        for i in order:
            for c in labels[i]:
                expected[c] = i
        assert bank.filled.tolist() == [c in expected for c in range(C)]
        for c, i in expected.items():
            assert torch.equal(bank.images[c], images[i])
            assert torch.equal(bank.boxes[c], boxes[i]) and torch.equal(bank.labels[c], multi_hot[i])


def test_later_batches_overwrite_only_their_classes():
    bank = ImageBank(C, (3, 2, 2), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    bank.update(*batch([[0], [1]]), generator)
    bank.update(*batch([[1, 2]], offset=10.0), generator)
    assert bank.images[0].eq(0).all() and bank.images[1].eq(10).all() and bank.images[2].eq(10).all()
    assert bank.filled.tolist() == [True, True, True, False]


def test_draws_come_from_filled_slots_only():
    bank = ImageBank(C, (3, 2, 2), torch.device("cpu"))
    with pytest.raises(ValueError, match="empty"):
        bank.draw(2, torch.Generator())
    bank.update(*batch([[1], [3]], offset=5.0), torch.Generator().manual_seed(0))
    images, boxes, labels = bank.draw(200, torch.Generator().manual_seed(1))
    assert images.shape == (200, 3, 2, 2) and boxes.shape == (200, 4) and labels.shape == (200, C)
    drawn_classes = labels.argmax(dim=1)
    assert set(drawn_classes.tolist()) == {1, 3}                     # never an empty slot
    for image, cls in zip(images, drawn_classes.tolist()):
        assert torch.equal(image, bank.images[cls])


def test_state_round_trip_gives_identical_draws():
    bank = ImageBank(C, (3, 2, 2), torch.device("cpu"))
    bank.update(*batch([[0, 2], [2], [3]]), torch.Generator().manual_seed(4))
    restored = ImageBank(C, (3, 2, 2), torch.device("cpu"))
    restored.load_state_dict(bank.state_dict())
    first = bank.draw(7, torch.Generator().manual_seed(9))
    second = restored.draw(7, torch.Generator().manual_seed(9))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    with pytest.raises(ValueError, match="shape"):
        ImageBank(C, (3, 4, 4), torch.device("cpu")).load_state_dict(bank.state_dict())
