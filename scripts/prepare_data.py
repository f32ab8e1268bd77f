"""Prepares one TFDS image set as array_record files, once, on a machine with internet.

Training reads these files with ``tfds.data_source`` and needs neither internet nor TensorFlow;
preparing most sets does need both (TFDS's builders encode images with TensorFlow):

  pip install -e .[prepare]
  python scripts/prepare_data.py cifar10 --data_dir=$HOME/tensorflow_datasets
  python scripts/prepare_data.py celeb_a                # --data_dir defaults to $TFDS_DATA_DIR,
                                                        # else ~/tensorflow_datasets

NAME is one of jaxebm.data.tfds.NAMES: mnist, fashion_mnist, cifar10, svhn_cropped, celeb_a,
imagenet32 (TFDS's downsampled_imagenet/32x32) and tiny_images (jaxebm's own 8x8 test set, which
prepares offline and without TensorFlow). Copy the resulting ``DATA_DIR/<tfds name>/`` folder to
the training machines, or share ``DATA_DIR``. Preparing an already prepared set does nothing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from jaxebm.data import tfds as tfds_data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Prepare a TFDS image set as array_record files for jaxebm.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("name", choices=tfds_data.NAMES, help="the dataset to prepare")
    parser.add_argument(
        "--data_dir",
        default=None,
        help="where to write it (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dataset = tfds_data.spec(args.name)
    data_dir = tfds_data.resolve_data_dir(args.data_dir)
    if dataset.module is None and importlib.util.find_spec("tensorflow") is None:
        print(
            f"Preparing {args.name} ({dataset.tfds_name}) needs TensorFlow, which TFDS's builder "
            "uses to encode images. Install the optional extra and run again:\n"
            "  pip install -e .[prepare]\n"
            f"  {tfds_data.prepare_command(args.name, data_dir)}",
            file=sys.stderr,
        )
        return 2
    import tensorflow_datasets as tfds

    if dataset.module is not None:
        importlib.import_module(dataset.module)  # registers jaxebm's own builder with TFDS
    builder = tfds.builder(dataset.tfds_name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    print(f"{args.name}: prepared {builder.data_dir}")
    print(f"Train with config.data.name={args.name!r} and config.data.data_dir={data_dir!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
