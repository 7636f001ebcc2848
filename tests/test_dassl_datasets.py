"""The Dassl wrappers in datasets/, built through Dassl's own DataManager from a real Dassl cfg."""

import os
import random

import pytest

pytest.importorskip("dassl")
pytestmark = pytest.mark.dassl

from dassl.config import get_cfg_default  # noqa: E402
from dassl.data import DataManager  # noqa: E402
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset  # noqa: E402
from test_data import _cifar_fake, _classnames_file, _img, _write_cifar_archive  # noqa: E402
from test_hierdata import IN_NAMES, IN_WNIDS, _imagenet_root  # noqa: E402

import datasets  # noqa: E402  (registers everything)
from hyptree.data.build import DATASET_NAMES, build_hierarchical_dataset  # noqa: E402
from hyptree.data.toy import make_toy_dataset  # noqa: E402
from hyptree.run.config import add_hyptree_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# dataset config file of a hyptree dataset name, where they differ: the default toy set
# (configs/datasets/toy.yaml) is ToyWorld; ToyHier, used by these tests, is toy_hier.yaml
CONFIG_OF = {"toy": "toy_hier", "toy_world": "toy"}


def _cfg(root, dataset, **dataset_keys):
    cfg = get_cfg_default()
    add_hyptree_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs", "datasets", f"{CONFIG_OF.get(dataset, dataset)}.yaml"))
    cfg.DATASET.ROOT = str(root)
    for k, v in dataset_keys.items():
        cfg.DATASET[k] = v
    cfg.SEED = 1
    cfg.USE_CUDA = False
    cfg.VERBOSE = False
    cfg.INPUT.SIZE = (32, 32)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 8
    cfg.freeze()
    return cfg


def _check_dm(dm, tree):
    ds = dm.dataset
    t = ds.taxonomy
    assert isinstance(ds, datasets.HierDatasetBase)
    assert ds.tree == tree and ds.taxonomy_source == ds.hier.source
    assert t.num_classes == dm.num_classes == ds.num_classes
    assert dm.lab2cname == {k: t.display_names[t.leaves[k]] for k in range(t.num_classes)}
    assert ds.classnames == list(ds.hier.classnames)
    assert ds.full_taxonomy.subtree([int(y) for y in ds.hier.full_labels]) == t
    for split in (ds.train_x, ds.val, ds.test):
        assert all(isinstance(d, Datum) and d.classname == dm.lab2cname[d.label] for d in split)
    for loader in (dm.train_loader_x, dm.test_loader):
        batch = next(iter(loader))
        assert batch["img"].ndim == 4 and tuple(batch["img"].shape[1:]) == (3, 32, 32)
        assert int(batch["label"].max()) < t.num_classes
        for path, y in zip(batch["impath"], batch["label"].tolist()):
            assert ds.hier.class_ids[y] in path  # the image's folder is its class
    return ds


def test_registry_and_configs():
    assert set(datasets.REGISTRY_NAMES) == set(DATASET_NAMES)
    registered = set(DATASET_REGISTRY.registered_names())
    for name, reg in datasets.REGISTRY_NAMES.items():
        assert reg in registered
        cls = DATASET_REGISTRY.get(reg)
        assert issubclass(cls, DatasetBase) and cls.hier_name == name
        cfg = get_cfg_default()
        cfg.merge_from_file(os.path.join(ROOT, "configs", "datasets", f"{CONFIG_OF.get(name, name)}.yaml"))
        assert cfg.DATASET.NAME == reg


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_dataset(str(root))
    return root


@pytest.mark.parametrize("subsample", ["all", "base", "new"])
def test_toyhier_through_datamanager(toy_root, subsample):
    dm = DataManager(_cfg(toy_root, "toy", NUM_SHOTS=2, SUBSAMPLE_CLASSES=subsample))
    ds = _check_dm(dm, subsample)
    n = ds.taxonomy.num_classes
    assert n == (18 if subsample == "all" else 9)
    assert len(ds.train_x) == 2 * n and len(ds.val) == 2 * n and len(ds.test) == 6 * n
    assert dm.val_loader is not None


def test_fewshot_equals_dassl_sampler_after_seeding(toy_root):
    """MaPLe's recipe: random.seed(SEED), then generate_fewshot_dataset on train and on val."""
    raw = make_toy_dataset(str(toy_root))
    to_datum = lambda items: [Datum(impath=i.impath, label=i.label, classname=i.classname) for i in items]
    base = DatasetBase.__new__(DatasetBase)
    random.seed(1)  # = cfg.SEED
    ref_train = base.generate_fewshot_dataset(to_datum(raw.train), num_shots=3)
    ref_val = base.generate_fewshot_dataset(to_datum(raw.val), num_shots=min(3, 4))
    ds = build_dataset(_cfg(toy_root, "toy", NUM_SHOTS=3).clone())
    assert [d.impath for d in ds.train_x] == [d.impath for d in ref_train]
    assert [d.impath for d in ds.val] == [d.impath for d in ref_val]


def test_cifar100hier_base_new_real_layout(tmp_path):
    _write_cifar_archive(str(tmp_path / "cifar-100"), _cifar_fake(n_train=16, n_test=8))
    names = {}
    for subsample in ("base", "new"):
        dm = DataManager(_cfg(tmp_path, "cifar100", NUM_SHOTS=1, SUBSAMPLE_CLASSES=subsample))
        ds = _check_dm(dm, subsample)
        assert ds.val is ds.test  # no val split: test is val, one Datum list
        assert len(ds.train_x) == ds.taxonomy.num_classes
        names[subsample] = set(dm.lab2cname.values())
    assert not names["base"] & names["new"]
    assert names["base"] | names["new"] == {"apple", "otter", "seal", "rose"}


def test_imagenet_and_test_only_target(tmp_path):
    root = _imagenet_root(str(tmp_path))
    dm = DataManager(_cfg(root, "imagenet", NUM_SHOTS=2))
    ds = _check_dm(dm, "all")
    assert dm.lab2cname == dict(enumerate(IN_NAMES))
    ds_a = os.path.join(root, "imagenet-adversarial")
    _classnames_file(os.path.join(ds_a, "classnames.txt"), IN_WNIDS, IN_NAMES)
    for w in IN_WNIDS[1:]:
        _img(os.path.join(ds_a, "imagenet-a", w, "0.jpg"))
    dm_a = DataManager(_cfg(root, "imagenet_a"))
    a = _check_dm(dm_a, "imagenet_a")
    assert a.train_x is a.test  # Dassl needs a train set; a target has none
    assert a.taxonomy == ds.taxonomy.subtree(IN_WNIDS[1:]) and dm_a.num_classes == 3


def test_missing_hyptree_keys_is_a_clear_error(toy_root):
    cfg = get_cfg_default()  # Dassl's defaults only: no SUBSAMPLE_* / TRAINER.HYPTREE keys
    cfg.DATASET.NAME = "ToyHier"
    cfg.DATASET.ROOT = str(toy_root)
    with pytest.raises(KeyError, match="add_hyptree_config"):
        build_dataset(cfg)


def test_wrapper_matches_library(toy_root):
    cfg = _cfg(toy_root, "toy", NUM_SHOTS=4, SUBSAMPLE_CLASSES="new")
    ds = build_dataset(cfg)
    hd = build_hierarchical_dataset("toy", str(toy_root), num_shots=4, subsample="new", seed=1)
    for ours, theirs in ((ds.train_x, hd.train_x), (ds.val, hd.val), (ds.test, hd.test)):
        assert [(d.impath, d.label, d.classname, d.domain) for d in ours] == [
            (i.impath, i.label, i.classname, i.domain) for i in theirs
        ]
    assert ds.taxonomy == hd.taxonomy and ds.full_taxonomy == hd.full_taxonomy
