"""Image grids: many uint8 faces on one sheet. numpy and PIL only, so packing a dataset never loads torch."""
import numpy as np
from PIL import Image


def grid_image(images, ncols=None, pad=2):
    """uint8 (N, H, W, 3) -> one PIL image of a near-square grid (or `ncols` wide) with white gaps."""
    n, h, w, _ = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    canvas = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = image
    return Image.fromarray(canvas)
