"""The walk-through of notebook 03 (sfc_core/analysis/walkthrough.py) shows what the network
computes, and the executed notebook copies in docs/notebooks/ stay small and linked."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sfc_core.analysis import walkthrough
from sfc_core.analysis.notebook import MAX_COPY_BYTES, copy_link, publish_executed, source_link
from sfc_core.data import MultiScaleDataset
from sfc_core.method.network import SfcNet
from sfc_core.model.build import build_backbone

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXECUTED = REPO / "docs" / "notebooks"


def tiny_net(num_classes: int) -> SfcNet:
    torch.manual_seed(0)
    return SfcNet(build_backbone("tiny", "none"), num_classes, side_channels=(8, 8, 16, 16), pcm=False).eval()


def test_pick_head_and_tail_takes_the_extreme_classes_and_their_simplest_image():
    labels = np.array([[1, 1, 0, 0],      # 0: head and class 1
                       [1, 0, 0, 0],      # 1: head alone -> the head image
                       [0, 1, 1, 0],      # 2: class 2 with class 1 -> the only tail image
                       [1, 0, 0, 0]])     # 3: head alone too, later in the list
    counts = [50, 20, 5, 1]               # class 3 is the rarest but absent from the list
    assert walkthrough.pick_head_and_tail(labels, counts) == {"head": (1, 0), "tail": (2, 2)}
    with pytest.raises(ValueError):
        walkthrough.pick_head_and_tail(np.zeros((2, 4)), counts)


def test_walk_image_runs_a_dataset_image_as_the_network_sees_it(smoke_dataset):
    model = tiny_net(smoke_dataset.num_classes)
    views = MultiScaleDataset(smoke_dataset, "train", scales=(1.0,))
    walk = walkthrough.walk_image(model, views, 3)
    assert walk["id"] == views.ids[3]
    np.testing.assert_array_equal(walk["image"], smoke_dataset.read_image(walk["id"]))
    assert walk["classes"] == [int(k) for k in np.flatnonzero(smoke_dataset.label(walk["id"]))]
    with torch.no_grad():     # the walk-through's maps are the network's own forward's, all of them
        maps = model(walk["images"], torch.cat([torch.ones(1), walk["label"]])[None, :, None, None],
                     intermediates=True)
        out = model(walk["images"], torch.cat([torch.ones(1), walk["label"]])[None, :, None, None])
    assert walk["steps"].keys() == maps.keys() >= {"classifier_cam", "features", "seeds", "prototypes"}
    for key in maps.keys() - {"stages"}:
        torch.testing.assert_close(walk["steps"][key], maps[key], rtol=0, atol=0)
    torch.testing.assert_close(walk["steps"]["prototype_cam"], out["prototype_cam"], rtol=0, atol=0)


def test_cam_panels_draw_each_map_over_the_image_with_a_colour_bar():
    image = np.zeros((32, 48, 3), dtype=np.uint8)
    fig = walkthrough.cam_panels([(image, [np.ones((4, 6)), 2 * torch.rand(4, 6)], ["a", "b"]),
                                  (image, [np.zeros((4, 6, 3))], ["rgb"])], vmax=None)
    assert len(fig.axes) == 2 * 2 + 2                # 2 x 2 panels, a colour bar for each of the 2 maps
    first, second = fig.axes[0].images[1], fig.axes[1].images[1]
    assert first.get_array().shape == (32, 48) and np.allclose(first.get_array(), 1.0)
    assert first.get_clim() == (0.0, 1.0) and second.get_clim()[1] == pytest.approx(second.get_array().max())
    assert len(fig.axes[2].images) == 1 and not fig.axes[3].images   # the RGB panel as is; the empty cell


def test_prototype_similarity_and_feature_rgb():
    prototypes = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    sim = walkthrough.prototype_similarity(prototypes)
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] == pytest.approx(0.0) and sim[3, 3] == 0.0
    rgb = walkthrough.feature_rgb(torch.randn(16, 5, 7))
    assert rgb.shape == (5, 7, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert np.allclose(rgb.reshape(-1, 3).max(axis=0), 1.0)


# -- the executed copies in docs/notebooks/ -----------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_links_its_executed_copy_in_its_first_cell(path):
    first = json.loads(path.read_text())["cells"][0]
    assert first["cell_type"] == "markdown"
    assert copy_link(path.name) in "".join(first["source"])


def test_publish_executed_copies_and_points_the_copy_back_at_its_source(tmp_path):
    source = json.loads(NOTEBOOKS[2].read_text())
    source["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["ran\n"]}]
    (tmp_path / "executed").mkdir()
    (tmp_path / "executed" / NOTEBOOKS[2].name).write_text(json.dumps(source))
    [(path, size)] = publish_executed(tmp_path / "executed", tmp_path / "docs", [NOTEBOOKS[2].stem])
    assert path == tmp_path / "docs" / NOTEBOOKS[2].name and size == path.stat().st_size
    copy = json.loads(path.read_text())
    first = "".join(copy["cells"][0]["source"])
    assert source_link(NOTEBOOKS[2].name) in first and copy_link(NOTEBOOKS[2].name) not in first
    assert copy["cells"][1:] == source["cells"][1:]
    # paths under the repository root come out relative: a copy does not name its machine
    source["cells"][1]["outputs"][0]["text"] = [f"runs: {tmp_path}/runs/x\n"]
    (tmp_path / "executed" / NOTEBOOKS[2].name).write_text(json.dumps(source))
    [(path, _)] = publish_executed(tmp_path / "executed", tmp_path / "docs", [NOTEBOOKS[2].stem], root=tmp_path)
    assert json.loads(path.read_text())["cells"][1]["outputs"][0]["text"] == ["runs: runs/x\n"]


def test_publish_executed_keeps_a_progress_bar_as_its_last_state(tmp_path):
    source = json.loads(NOTEBOOKS[2].read_text())
    bar = [{"output_type": "stream", "name": "stderr", "text": [text]}
           for text in ("\rtrain:   0%| 0/2", "\rtrain:  50%| 1/2", "\rtrain: 100%| 2/2", "\n")]
    printed = {"output_type": "stream", "name": "stdout", "text": ["a\n", "b\n"]}
    image = {"output_type": "display_data", "data": {"text/plain": ["x"]}, "metadata": {}}
    source["cells"][1]["outputs"] = [printed, *bar, image, dict(printed)]
    (tmp_path / "executed").mkdir()
    (tmp_path / "executed" / NOTEBOOKS[2].name).write_text(json.dumps(source))
    [(path, _)] = publish_executed(tmp_path / "executed", tmp_path / "docs", [NOTEBOOKS[2].stem])
    outputs = json.loads(path.read_text())["cells"][1]["outputs"]
    assert [o.get("name") for o in outputs] == ["stdout", "stderr", None, "stdout"]
    assert outputs[1]["text"] == ["train: 100%| 2/2\n"] and outputs[0]["text"] == ["a\n", "b\n"]


def test_executed_copies_when_present_are_under_2_mb_and_have_outputs():
    copies = sorted(EXECUTED.glob("*.ipynb"))
    assert {p.name for p in copies} <= {p.name for p in NOTEBOOKS}
    for copy in copies:
        assert copy.stat().st_size < MAX_COPY_BYTES, f"{copy.name}: {copy.stat().st_size} bytes"
        cells = json.loads(copy.read_text())["cells"]
        assert any(c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{copy.name} has no outputs"
