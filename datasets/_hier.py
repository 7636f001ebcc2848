"""Shared Dassl glue: a ``DatasetBase`` built from ``hyptree.data.build``.

A subclass sets ``hier_name`` (a ``hyptree.data.build.DATASET_NAMES`` entry) and registers
itself; everything else (files, taxonomy, few-shot, base/novel) is
``hyptree.data.build.build_hierarchical_dataset``.
"""

from dassl.data.datasets import DatasetBase, Datum

from hyptree.data.build import build_hierarchical_dataset
from hyptree.run.factory import dataset_options


def to_datums(items):
    """``hyptree.data.Item`` list -> Dassl ``Datum`` list (Datum checks each file exists)."""
    return [Datum(impath=i.impath, label=i.label, domain=i.domain, classname=i.classname) for i in items]


class HierDatasetBase(DatasetBase):
    """Dassl dataset with a taxonomy: label ``k`` is leaf ``k`` of ``self.taxonomy``.

    Needs ``hyptree.run.config.add_hyptree_config(cfg)`` to have run (a ``KeyError`` says so).
    Extra attributes: ``taxonomy`` (this run's tree: all, base or new classes),
    ``full_taxonomy`` (all classes), ``tree`` (``all``/``base``/``new``/target name),
    ``taxonomy_source`` (where the hierarchy came from) and ``hier`` (the whole
    ``HierDataset``). A test-only dataset (ImageNet variants) uses its test set as
    ``train_x``, since Dassl requires one.
    """

    hier_name = ""

    def __init__(self, cfg):
        hd = build_hierarchical_dataset(self.hier_name, **dataset_options(cfg))
        test = to_datums(hd.test)
        val = test if hd.val is hd.test else to_datums(hd.val)
        train_x = to_datums(hd.train_x) if hd.train_x else test
        super().__init__(train_x=train_x, val=val, test=test)
        self.hier = hd
        self.taxonomy = hd.taxonomy
        self.full_taxonomy = hd.full_taxonomy
        self.tree = hd.tree
        self.taxonomy_source = hd.source
        # Dassl derives num_classes and lab2cname from train_x: they must agree with the tree
        if self.num_classes != hd.taxonomy.num_classes or self.classnames != hd.classnames:
            raise RuntimeError(
                f"{type(self).__name__}: train_x has {self.num_classes} classes "
                f"({len(self.lab2cname)} named) but the taxonomy has {hd.taxonomy.num_classes}; "
                "every class needs at least one training image"
            )
