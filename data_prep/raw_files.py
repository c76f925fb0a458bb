"""Finding a raw data set's image and label files by volume id, and pairing them."""
import re

from sifa_synthmix.data.scans import RawDataError


def files_by_id(folder, pattern, example):
    """{id: path} of the files in `folder` whose names match `pattern` in full (its group "id"
    is the integer volume id); none is an error that shows `example`, a matching name."""
    if not folder.is_dir():
        raise RawDataError(f"{folder}: folder not found (expected files named like {example})")
    regex = re.compile(pattern)
    found = {}
    for path in sorted(folder.iterdir()):
        match = regex.fullmatch(path.name)
        if match:
            found[int(match.group("id"))] = path
    if not found:
        raise RawDataError(f"{folder}: no file named like {example}")
    return found


def paired_files(images, labels, image_path, label_path):
    """{id: (image path, label path)} from {id: path} maps of images and labels; a file whose
    partner (expected at image_path(id) or label_path(id)) is missing is an error naming it."""
    for found, other, expected, kind in ((images, labels, label_path, "label"),
                                         (labels, images, image_path, "image")):
        missing = sorted(set(found) - set(other))
        if missing:
            raise RawDataError(f"{found[missing[0]]}: its {kind} partner {expected(missing[0])} is missing")
    return {i: (images[i], labels[i]) for i in sorted(images)}
