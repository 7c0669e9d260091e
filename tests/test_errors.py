"""SfcError reaches the user as the kit's own message from DataLoader workers and worker processes."""
from __future__ import annotations

import pickle

import pytest
from torch.utils.data import DataLoader, Dataset

from sfc_core.errors import SfcError


class Unreadable(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise SfcError(f"cannot read image {index}\n(second line)", path=f"/data/{index}.jpg",
                       fix="re-extract the dataset")


def test_an_error_raised_in_a_dataloader_worker_arrives_unwrapped():
    with pytest.raises(SfcError) as info:
        next(iter(DataLoader(Unreadable(), num_workers=1, batch_size=None)))
    error = info.value
    assert (error.problem, error.path, error.fix) == ("cannot read image 0\n(second line)", "/data/0.jpg",
                                                      "re-extract the dataset")
    assert str(error) == "cannot read image 0\n(second line)\n  file: /data/0.jpg\n  fix:  re-extract the dataset"
    assert "Traceback" in error.worker_traceback and "__getitem__" in error.worker_traceback


def test_an_error_pickles_whole():
    error = pickle.loads(pickle.dumps(SfcError("bad", path="/x", fix="do y")))
    assert (error.problem, error.path, error.fix, str(error)) == ("bad", "/x", "do y", "bad\n  file: /x\n  fix:  do y")
