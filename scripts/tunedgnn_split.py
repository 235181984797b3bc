"""Write the random Planetoid split that tunedGNN (Luo et al., NeurIPS 2024) reports Cora/CiteSeer/PubMed on.

tunedGNN's ``medium_graph/main.py`` seeds torch with ``--seed 123`` and then draws ONE split with
``class_rand_splits`` (per class: ``torch.randperm`` of its nodes, the first 20 to train; then a
``torch.randperm`` of all the other nodes: the first 500 validation, the next 1000 test), and trains all
its ``--runs 5`` on that one split.  This script replays those draws (same calls, same order, same
generator state) and writes the split as an ``.npz`` that ``IndexFileSplit`` reads, so a preset can be
run on the very split the published figure comes from::

    python scripts/tunedgnn_split.py --root $GRAPHGT_DATA_ROOT --name Cora --out cora_split123.npz
    graphgt train --multirun experiment=cora-gcn-tuned seed=0,1,2,3,4 \\
        +data.split._target_=graphgt.data.splits.IndexFileSplit +data.split.path=cora_split123.npz

It is one split: compare with ``+data/split=per-class data.split.seed=0,...,9`` (ten random splits of
the same sizes) to see where it lies among them (docs/reproducing.md).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch


def class_rand_split(labels: torch.Tensor, seed: int, per_class: int = 20, val: int = 500,
                     test: int = 1000) -> Dict[str, np.ndarray]:
    """tunedGNN's split of ``labels [N]`` after seeding every generator with ``seed`` (its ``fix_seed``).

    Returns ``{"train", "valid", "test"}`` int64 index arrays, in the order tunedGNN draws them.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    labels = labels.reshape(-1)
    ids = torch.arange(labels.shape[0])
    train, rest = [], []
    for c in labels.unique():
        members = ids[labels == c]
        shuffled = members[torch.randperm(members.shape[0])]
        train += shuffled[:per_class].tolist()
        rest += shuffled[per_class:].tolist()
    others = torch.as_tensor(rest)
    others = others[torch.randperm(others.shape[0])]
    return {"train": np.asarray(train, dtype=np.int64), "valid": others[:val].numpy().astype(np.int64),
            "test": others[val:val + test].numpy().astype(np.int64)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the data root holding planetoid/<name> (as data.root)")
    parser.add_argument("--name", default="Cora", help="Cora, CiteSeer or PubMed")
    parser.add_argument("--seed", type=int, default=123, help="tunedGNN's --seed (run_gnn.sh: 123)")
    parser.add_argument("--per-class", type=int, default=20, help="--label_num_per_class")
    parser.add_argument("--val", type=int, default=500, help="--valid_num")
    parser.add_argument("--test", type=int, default=1000, help="--test_num")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    args = parser.parse_args(argv)
    if args.out.suffix != ".npz":
        parser.error(f"--out {args.out}: write an .npz (IndexFileSplit picks the format by suffix)")
    from graphgt.data.planetoid import PlanetoidData
    from graphgt.errors import ConfigError

    data = PlanetoidData(args.root, args.name)
    try:
        data.check()
    except ConfigError as e:
        parser.exit(2, f"tunedgnn_split: error: {e}\n")
    with tempfile.TemporaryDirectory() as cache:  # PyG's processed/ goes here, never into --root
        labels = data.prepare(Path(cache)).split_source.y
    split = class_rand_split(labels, args.seed, args.per_class, args.val, args.test)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **split)
    print(f"{args.out}: {args.name} split of tunedGNN's seed {args.seed}: "
          f"{len(split['train'])} train / {len(split['valid'])} valid / {len(split['test'])} test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
