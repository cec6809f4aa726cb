"""Writes scikit-learn's handwritten digits (1,797 images of 8x8 px, 10 classes, shipped with
scikit-learn, so offline) as a folder of class sub-folders, the layout `keras-vit train
--dataset FOLDER` reads: FOLDER/<digit>/<index>.png.

    python examples/digits_folder.py data/digits
    keras-vit train --dataset data/digits --image-size 32 --output-dir runs/digits_scratch
"""

import argparse
import os

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits


def write_digits(root):
    """Writes the digits as 8x8 grayscale PNGs (0-16 scaled to 0-255); returns the image count."""
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    for index, (image, label) in enumerate(zip(images, digits.target)):
        folder = os.path.join(root, str(label))
        os.makedirs(folder, exist_ok=True)
        png = tf.io.encode_png(image[:, :, None]).numpy()
        with open(os.path.join(folder, f"{index:04d}.png"), "wb") as file:
            file.write(png)
    return len(images)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the folder to write (one sub-folder per digit)")
    count = write_digits(parser.parse_args().root)
    print(f"wrote {count} images")
