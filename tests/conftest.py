"""Test-wide settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread_torch():
    """Tiny models run faster on one thread, and far faster on a shared, busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_world_factory(tmp_path_factory):
    """Make a tiny FineShapes world with labels, random packed features and a tiny MLE config.

    Returns (root folder, config path). Worlds are cached by their arguments.
    """
    import json

    import numpy as np

    from captioning.data.features import write_packed
    from captioning.data.prepro import prepro_labels
    from captioning.fineshapes.dataset import FineShapesPaths, FineShapesSpec, generate

    made = {}

    def make(n_train: int = 30, n_val: int = 8, n_test: int = 8, batch_size: int = 10):
        key = (n_train, n_val, n_test, batch_size)
        if key in made:
            return made[key]
        root = tmp_path_factory.mktemp("world")
        paths = FineShapesPaths(images_dir=root / "images", dataset_json=root / "dataset.json",
                                eval_json=root / "e.json", eval_csv=root / "e.csv", scenes_json=root / "s.json")
        generate(FineShapesSpec(n_train=n_train, n_restval=0, n_val=n_val, n_test=n_test, n_eval=0, image_size=32),
                 paths, progress=False, workers=1)
        prepro_labels(paths.dataset_json, root / "talk.json", root / "talk", word_count_threshold=0)
        ids = [im["id"] for im in json.loads((root / "talk.json").read_text())["images"]]
        rng = np.random.default_rng(0)
        write_packed(root / "att.npy", ids, rng.standard_normal((len(ids), 4, 8)).astype(np.float32))
        cfg = root / "tiny.yml"
        cfg.write_text(f"""
input_json: {root / 'talk.json'}
input_label_h5: {root / 'talk_label.h5'}
input_att_dir: {root / 'att.npy'}
input_ref_json: {paths.dataset_json}
att_feat_size: 8
N_enc: 1
N_dec: 1
d_model: 16
d_ff: 32
num_att_heads: 2
batch_size: {batch_size}
num_workers: 0
max_epochs: 1
noamopt: true
noamopt_warmup: 10
language_eval: 0
""")
        made[key] = (root, cfg)
        return made[key]

    return make
