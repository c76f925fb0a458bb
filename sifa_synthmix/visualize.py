"""Colour overlays of label maps on images, shared by TensorBoard and the evaluation figures."""
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

# Background transparent, then one distinct colour per class (cycled beyond the list).
_CLASS_COLOURS = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25],
    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
], np.float32) / 255.0


def class_colours(num_classes):
    """num_classes x 3 RGB colours in [0, 1]; class 0 (background) is black."""
    index = np.concatenate([[0], 1 + (np.arange(num_classes - 1) % (len(_CLASS_COLOURS) - 1))])
    return _CLASS_COLOURS[index]


def grey_to_rgb(images):
    """[B, H, W, 1] images in [-1, 1] -> [B, H, W, 3] in [0, 1]."""
    images = tf.clip_by_value((tf.cast(images, tf.float32) + 1.0) / 2.0, 0.0, 1.0)
    return tf.image.grayscale_to_rgb(images)


def overlay(images, labels, num_classes, alpha=0.5):
    """Blends class colours over images where the label is foreground.

    images: [B, H, W, 1] in [-1, 1]; labels: [B, H, W] integer class indices.
    """
    rgb = grey_to_rgb(images)
    labels = tf.cast(labels, tf.int32)
    colours = tf.gather(tf.constant(class_colours(num_classes)), tf.clip_by_value(labels, 0, num_classes - 1))
    foreground = tf.cast((labels > 0) & (labels < num_classes), tf.float32)[..., tf.newaxis] * alpha
    return rgb * (1.0 - foreground) + colours * foreground


def prediction_beside_truth(images, predicted, true, num_classes):
    """[B, H, 2W, 3]: the predicted labels' overlay on the left, the true labels' on the right."""
    return tf.concat([overlay(images, predicted, num_classes), overlay(images, true, num_classes)], axis=2)


def legend_image(class_names, row_height=20, width=220):
    """[1, rows x row_height, width, 3] float image in [0, 1]: per class a swatch of its overlay
    colour and its index and name (background is left uncoloured by `overlay`)."""
    colours = class_colours(len(class_names))
    legend = Image.new("RGB", (width, row_height * len(class_names)), "white")
    draw = ImageDraw.Draw(legend)
    for index, (name, colour) in enumerate(zip(class_names, colours)):
        top = index * row_height
        swatch = "white" if index == 0 else tuple(int(round(255 * c)) for c in colour)
        draw.rectangle([4, top + 3, 34, top + row_height - 4], fill=swatch, outline="black")
        note = " (not coloured)" if index == 0 else ""
        draw.text((42, top + 4), f"{index} {name}{note}", fill="black")
    return np.asarray(legend, np.float32)[np.newaxis] / 255.0
