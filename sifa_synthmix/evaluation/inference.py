"""Label volume of one test image volume, predicted slice by slice."""
import numpy as np

from sifa_synthmix.data.reader import to_unit_range


def predict_volume(predict_logits, image, intensity_range, batch_size, flip=False):
    """Integer label volume H x W x D of an image volume H x W x D (slice axis 2).

    predict_logits: callable, float32 [N, H, W, 1] in [-1, 1] -> logits [N, H, W, C] (a
    tf.function or a numpy function). Every slice is predicted: the last batch is padded to
    `batch_size` by repeating its last slice (so a tf.function sees one shape and traces once)
    and the padded outputs are dropped. The official script predicted only
    floor(D / 128) * 128 slices and counted the rest as background.

    flip: the test volumes are stored flipped on axes 0 and 1 relative to the training slices.
    The official script flipped image and label before inference and scored them in that
    orientation; here the image is flipped for inference and the prediction flipped back, so it
    lines up with the stored label and image (and the saved NIfTI overlays them). Dice and ASSD
    do not change under the flip.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an H x W x D image volume, got shape {image.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    volume = np.flip(image, (0, 1)) if flip else image
    slices = to_unit_range(np.moveaxis(volume, 2, 0).astype(np.float32), intensity_range)[..., np.newaxis]
    depth = slices.shape[0]
    labels = []
    for start in range(0, depth, batch_size):
        batch = slices[start:start + batch_size]
        count = batch.shape[0]
        if count < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - count, axis=0)])
        logits = np.asarray(predict_logits(batch.astype(np.float32)))
        labels.append(np.argmax(logits[:count], axis=-1))
    prediction = np.moveaxis(np.concatenate(labels), 0, 2)
    return np.flip(prediction, (0, 1)) if flip else prediction
