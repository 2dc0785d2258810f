"""Image grids: many uint8 faces on one sheet, and labelled figures of them (the SeFa directions, a projection)
that a person can read alone. numpy and PIL only, so packing a dataset never loads torch."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FIGURE_FACE_PX = 96  # a figure's faces are scaled up to at least this side: a 32 or 64 px face is a smudge at 100 %
LABEL_PX = 13  # the labels' text height
MARGIN = 4  # around the labels


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


def upscaled(images, side=FIGURE_FACE_PX):
    """uint8 (N, H, W, 3) scaled up by the whole factor that makes H at least `side`, by nearest neighbour: each
    pixel a block, so nothing is smoothed or made up."""
    factor = max(1, -(-side // images.shape[1]))
    return images.repeat(factor, axis=1).repeat(factor, axis=2)


def labelled_grid(images, ncols, column_labels=(), row_labels=(), title="", pad=2):
    """A figure: the faces upscaled() in a grid `ncols` wide, column_labels centred above the columns, row_labels
    left of the rows, and a title line above all; a strip is left out when it has nothing to say."""
    faces = upscaled(images)
    grid = grid_image(faces, ncols, pad)
    side = faces.shape[1]
    font = ImageFont.load_default(size=LABEL_PX)  # scalable since Pillow 10.1
    line = LABEL_PX + 2 * MARGIN
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max((measure.textlength(label, font=font) for label in row_labels), default=0)
    left = int(left) + 2 * MARGIN if left else 0
    title_h, columns_h = (line if title else 0), (line if any(column_labels) else 0)
    width = max(left + grid.width, int(measure.textlength(title, font=font)) + 2 * MARGIN if title else 0)
    canvas = Image.new("RGB", (width, title_h + columns_h + grid.height), "white")
    canvas.paste(grid, (left, title_h + columns_h))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((MARGIN, MARGIN), title, fill="black", font=font)
    for i, label in enumerate(column_labels):
        centre = left + pad + i * (side + pad) + side / 2
        draw.text((centre, title_h + line / 2), label, fill="black", font=font, anchor="mm")
    for r, label in enumerate(row_labels):
        middle = title_h + columns_h + pad + r * (side + pad) + side / 2
        draw.text((left - MARGIN, middle), label, fill="black", font=font, anchor="rm")
    return canvas
