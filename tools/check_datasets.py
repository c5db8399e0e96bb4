"""Run the start-of-run dataset check of a recipe on its own, and print how fast it reads.

    python -m tools.check_datasets --config-file projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py
    python -m tools.check_datasets --config-file F --decode --repeat 3 dataloader.train.dataset.names=coco_mini_train

For every dataset the recipe names (train, test, evaluator) it loads the json and reads every image's header
(``--decode``: the full image), exactly as ``scripts.train_net`` does before it builds the model, then prints
one line per dataset: images, unusable files, seconds and images/s (best of ``--repeat`` runs; the json is
read outside the timed part). Each unusable file is also logged once with its reason.
"""
import argparse
import logging
import sys
import time

from lazydet.config import ConfigError, LazyConfig
from lazydet.data import DataError, DatasetCatalog, dataset_names, scan_images


def parse_args(argv=None):
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="a recipe with a `dataloader`")
    p.add_argument("--decode", action="store_true", help="decode every image fully (finds damage inside the data)")
    p.add_argument("--repeat", type=int, default=1, help="time the scan this many times, report the best")
    p.add_argument("opts", nargs="*", help="config overrides, dotted.key=value")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Check each dataset of the recipe; exit status 1 when a dataset is missing or unusable files were found."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
        rows, found_bad = [], False
        for name in dataset_names(cfg):
            records = DatasetCatalog.get(name)
            best, bad = float("inf"), {}
            for _ in range(max(args.repeat, 1)):
                start = time.perf_counter()
                bad = scan_images(records, decode=args.decode)
                best = min(best, time.perf_counter() - start)
            for file_name, reason in bad.items():
                logging.warning(f"{name}: {file_name}: {reason}")
            found_bad = found_bad or bool(bad)
            rows.append(f"{name}: {len(records)} images, {len(bad)} unusable, {best:.3f} s, "
                        f"{len(records) / max(best, 1e-9):.0f} images/s ({'decoded' if args.decode else 'headers'})")
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(rows))
    return 1 if found_bad else 0


if __name__ == "__main__":
    sys.exit(main())
